"""The app's own OpenAI-compatible API, served beside the UI: `/v1/models`, `/v1/chat/completions`.

Any OpenAI client can chat with the app's model, with or without a skill:

>>> client = openai.OpenAI(base_url="http://127.0.0.1:7860/v1", api_key=KEY)  # doctest: +SKIP
>>> client.chat.completions.create(model=f"{name}:translate-to-german", messages=[...])  # doctest: +SKIP

* Skills: `model` is the served model's name (no skill: the messages as sent) or
  `"<model>:<skill id>"` as listed by `/v1/models`; or send `"skill": "<id or name>"` in the body.
* Settings: the app's defaults, then the skill's settings, then the request's fields.
* Auth: with `--api-key`, `Authorization: Bearer <key>`; with `--auth`, an account as
  `Bearer user:password` or HTTP Basic. Either is accepted; with neither, the API is open, like the UI.
* Concurrency: at most `engine.answers_at_once` answers; more wait up to QUEUE_WAIT_S, then get 429.
  The UI's own answers never wait for this limit, so API traffic cannot lock the UI out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import schema
from .logprobs import TokenFeed, choice_logprobs, whole_answer
from .schema import ApiError, ChatRequest
from ..engine import Engine, Generation
from ..errors import ChatError, GenerationError, SettingsError
from ..settings import GenerationSettings
from ..skills import Skill, SkillBook
from ..answer_tokens import TokenStep

QUEUE_WAIT_S = 30.0  # a request waits this long for a free slot, then gets 429
DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there
DRAIN_LIMIT_BYTES = 16 * schema.MAX_BODY_BYTES  # an oversize body is read (and dropped) up to here so
# the client gets to read its 413 instead of a broken pipe; beyond it the connection is just refused
RETRY_AFTER_S = 2

Accounts = Iterable[tuple[str, str]] | Callable[[str, str], bool] | None


def mount_api(app: Any, engine: Engine, skills: SkillBook, defaults: GenerationSettings | None = None, instructions: str = "",
              api_key: str | None = None, auth: Accounts = None, max_parallel: int | None = None,
              queue_wait_s: float = QUEUE_WAIT_S) -> "ChatApi":
    """Adds the /v1 routes to a Starlette/FastAPI app (Gradio's `demo.app` included, even after launch).

    Gradio's `auth` does not cover routes added this way: the API checks `api_key`/`auth` itself.
    """
    api = ChatApi(engine, skills, defaults or GenerationSettings(), instructions, Guard(api_key, auth),
                  max_parallel or engine.answers_at_once, queue_wait_s)
    app.add_route("/v1/models", api.models, methods=["GET"])
    app.add_route("/v1/chat/completions", api.chat_completions, methods=["POST"])
    return api


class Guard:
    """Who may call the API: the API key as a bearer token, or an --auth account."""

    def __init__(self, api_key: str | None, accounts: Accounts):
        self.api_key = api_key or None
        self.accounts = accounts if callable(accounts) else [(str(u), str(p)) for u, p in accounts or ()]

    def check(self, request: Request) -> None:
        if not self.api_key and not self.accounts:
            return
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        scheme, credential = scheme.lower(), credential.strip()
        if scheme == "bearer" and (_same(credential, self.api_key) or self._account(*_pair(credential))):
            return
        if scheme == "basic" and self._account(*_pair(_basic(credential))):
            return
        how = "Authorization: Bearer <API key>" + (" (or user:password of an --auth account)" if self.accounts else "")
        raise ApiError(401, f"missing or wrong credentials: send {how}; the openai client sends its api_key this way",
                       code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="chat"'})

    def _account(self, user: str | None, password: str | None) -> bool:
        if user is None or password is None or not self.accounts:
            return False
        if callable(self.accounts):
            try:
                return bool(self.accounts(user, password))
            except Exception:  # noqa: BLE001 - a failing auth function refuses, it doesn't crash the request
                return False
        return any(_same(user, u) & _same(password, p) for u, p in self.accounts)  # & : no early exit


class ChatApi:
    """The route handlers, bound to one engine, its skills and the app's defaults."""

    def __init__(self, engine: Engine, skills: SkillBook, defaults: GenerationSettings, instructions: str,
                 guard: Guard, max_parallel: int, queue_wait_s: float):
        self.engine, self.defaults, self.instructions, self.guard = engine, defaults, instructions, guard
        self.skills = schema.skill_ids(skills)
        self.max_parallel, self.queue_wait_s = max_parallel, queue_wait_s
        self._slots = asyncio.Semaphore(max_parallel)

    async def models(self, request: Request) -> Response:
        try:
            self.guard.check(request)
        except ApiError as error:
            return error_response(error)
        return JSONResponse(_json(schema.models_list(self.engine.name, self.skills, self.engine.context_window)))

    async def chat_completions(self, request: Request) -> Response:
        try:
            self.guard.check(request)
            chat = schema.parse_chat_request(await read_body(request))
            messages, settings, stops = self.plan(chat, schema.requested_skill(chat, self.engine.name, self.skills))
            await self._take_slot()
        except ApiError as error:
            return error_response(error)
        try:
            fitted = await asyncio.to_thread(self.engine.prepare, messages, settings, bool(chat.continue_final_message))
            generation = self.engine.generate(fitted, settings, stops, tokens=bool(chat.logprobs))
            pump = Pump(generation, on_done=self._slots.release, tokens=bool(chat.logprobs and chat.stream))
        except ChatError as error:  # e.g. the instructions alone overflow the context
            self._slots.release()
            return error_response(ApiError(400, str(error), "messages", "invalid_prompt"))
        except Exception as error:  # noqa: BLE001 - still an OpenAI-shaped answer, not a bare 500 page
            self._slots.release()
            return error_response(ApiError(500, f"could not start the answer: {type(error).__name__}: {error}", kind="server_error"))
        headers = {"X-Context-Notice": fitted.notice} if fitted.notice else {}
        if chat.stream:
            return StreamingResponse(self._events(pump, chat), media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"})
        return await self._whole(pump, chat, request, headers)

    def plan(self, chat: ChatRequest, skill: Skill | None) -> tuple[list[dict[str, str]], GenerationSettings, tuple[str, ...]]:
        """Messages, settings and stop strings for the engine, as the UI would build them."""
        try:
            settings = self.defaults.merged(skill.settings if skill else None).replace(**chat.overrides())
        except SettingsError as error:
            raise ApiError(400, str(error), code="invalid_value") from None
        assert chat.messages is not None  # the request model refuses a request without them
        messages = [dict(m) for m in chat.messages]
        if skill is not None and not chat.continue_final_message:  # only the new message: earlier turns were expanded when sent
            messages[-1]["content"] = skill.expand(messages[-1]["content"])
        if messages[0]["role"] != "system" and self.instructions.strip():  # the client's own system message wins
            messages.insert(0, {"role": "system", "content": self.instructions})
        stops = tuple(dict.fromkeys((skill.stop if skill else ()) + chat.stop))
        return messages, settings, stops

    async def _take_slot(self) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_wait_s)
        except asyncio.TimeoutError:
            raise ApiError(429, f"the server is busy: {self.max_parallel} answers are being generated; try again shortly",
                           code="rate_limit_exceeded", kind="rate_limit_error",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    async def _events(self, pump: "Pump", chat: ChatRequest) -> AsyncIterator[str]:
        """Server-sent events; a client that goes away is a Stop (Starlette cancels this generator)."""
        cid, model = schema.completion_id(), chat.model
        try:
            yield _event(schema.chunk(cid, model, {"role": "assistant", "content": ""}))
            try:
                async for piece in pump.pieces():
                    yield _event(schema.chunk(cid, model, {"content": piece.text}, logprobs=_logprobs(chat, piece.tokens)))
            except ChatError as error:  # mid-stream: the status is sent already, so an error event
                yield _event(ApiError(500, str(error), kind="server_error", code="generation_failed").body())
                yield "data: [DONE]\n\n"
                return
            stats = pump.generation.stats
            rest = pump.feed.rest() if pump.feed is not None else []  # tokens whose text came before they were complete
            yield _event(schema.chunk(cid, model, finish=stats, logprobs=_logprobs(chat, rest) if rest else None))
            if chat.include_usage:
                yield _event(schema.chunk(cid, model, stats_usage=stats))
            yield "data: [DONE]\n\n"
        finally:
            pump.stop()

    async def _whole(self, pump: "Pump", chat: ChatRequest, request: Request, headers: dict[str, str]) -> Response:
        parts: list[str] = []
        try:
            async for piece in pump.pieces(request):
                parts.append(piece.text)
        except ChatError as error:
            return error_response(ApiError(500, str(error), kind="server_error", code="generation_failed"))
        finally:
            pump.stop()
        logprobs = whole_answer(pump.generation.tokens, chat.top_logprobs or 0) if chat.logprobs else None
        body = schema.completion(schema.completion_id(), chat.model, "".join(parts), pump.generation.stats, logprobs)
        return JSONResponse(_json(body), headers=headers)


def _logprobs(chat: ChatRequest, steps: list[TokenStep]) -> dict[str, Any] | None:
    return choice_logprobs(steps, chat.top_logprobs or 0) if chat.logprobs else None


_END = object()


@dataclass
class Piece:
    """A text delta, and the tokens whose text has now all reached the client (when they are streamed)."""

    text: str
    tokens: list[TokenStep] = field(default_factory=list)


class Pump:
    """Runs one generation in its own thread and hands its deltas to the event loop.

    The thread, not the HTTP response, owns the generation: it always ends it (at its natural
    end or at Stop) and then frees the request's slot, even if the response never started.
    `tokens`: each piece carries its tokens, read by this thread, which alone sees the text and the
    tokens in step.
    """

    def __init__(self, generation: Generation, on_done: Callable[[], None], tokens: bool = False):
        self.generation, self._on_done = generation, on_done
        self.feed = TokenFeed(generation) if tokens else None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self.finished = False
        threading.Thread(target=self._run, name="api-answer", daemon=True).start()

    def stop(self) -> None:
        """Cancels the generation unless it already ended (idempotent)."""
        if not self.finished:
            self.generation.cancel()

    async def pieces(self, request: Request | None = None) -> AsyncIterator[Piece]:
        """Text deltas (with their tokens); with `request`, stops when the client disconnects."""
        getter: asyncio.Future | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S if request is not None else None)
                if not done:
                    if request is not None and await request.is_disconnected():
                        return
                    continue
                item, getter = getter.result(), None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if getter is not None:
                getter.cancel()
            self.stop()

    def _run(self) -> None:
        item: Any = _END
        try:
            for delta in self.generation:
                self._call(self._queue.put_nowait, Piece(delta, self.feed.new() if self.feed is not None else []))
        except ChatError as error:
            item = error
        except Exception as error:  # noqa: BLE001 - reaches the client as an error, never kills the thread silently
            item = GenerationError(f"generation failed: {type(error).__name__}: {error}")
        self.finished = True
        self._call(self._queue.put_nowait, item)
        self._call(self._on_done)

    def _call(self, function: Callable, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the server shut down meanwhile: nobody is listening
            pass


async def read_body(request: Request) -> bytes:
    """The body, up to MAX_BODY_BYTES; more is a 413 (after reading the rest, up to a limit)."""
    too_large = ApiError(413, f"the request body is larger than {schema.MAX_BODY_BYTES // 1024} KiB", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_LIMIT_BYTES:
        raise too_large
    body, size = bytearray(), 0
    async for part in request.stream():
        size += len(part)
        if size <= schema.MAX_BODY_BYTES:
            body += part
        elif size > DRAIN_LIMIT_BYTES:
            break
    if size > schema.MAX_BODY_BYTES:
        raise too_large
    return bytes(body)


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _json(body: BaseModel) -> dict[str, Any]:
    """A response model as JSON data: the fields it was given, `null`s included, and no others."""
    return body.model_dump(mode="json", exclude_unset=True)


def _event(data: BaseModel | dict[str, Any]) -> str:
    data = _json(data) if isinstance(data, BaseModel) else data
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _same(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison, so response timing can't reveal how much of a secret matched."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _pair(credential: str) -> tuple[str | None, str | None]:
    user, sep, password = credential.partition(":")
    return (user, password) if sep else (None, None)


def _basic(credential: str) -> str:
    try:
        return base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
