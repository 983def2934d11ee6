"""The app's own OpenAI-compatible API, served beside the UI: `/v1/models`, `/v1/chat/completions`.

Any OpenAI client can chat with the app's model, with or without a skill:

>>> client = openai.OpenAI(base_url="http://127.0.0.1:7860/v1", api_key=KEY)  # doctest: +SKIP
>>> client.chat.completions.create(model=f"{name}:translate-to-german", messages=[...])  # doctest: +SKIP

* Models: `model` names a model of the app's list, as `/v1/models` lists them (every model, with
  `max_model_len` and `loaded`); its base name means its default variant ("SmolLM2-135M-Instruct" →
  "SmolLM2-135M-Instruct · int8"). One that isn't loaded loads first, with the page's memory check (503
  when it won't fit); an unknown one is a 404.
* Skills: `"<model>:<skill id>"` (any model of the list, any skill; `/v1/models` lists the default model's),
  or `"skill": "<id or name>"` in the body; without either, the messages go as sent.
* Settings: the app's defaults, then the skill's settings, then the request's fields (chat/request.py,
  as the page builds them).
* Auth: with `--api-key`, `Authorization: Bearer <key>`; with `--auth`, an account as
  `Bearer user:password` or HTTP Basic. Either is accepted; with neither, the API is open, like the UI.
* Concurrency: at most `engine.answers_at_once` answers; more wait up to QUEUE_WAIT_S, then get 429.
  The UI's own answers never wait for this limit, so API traffic cannot lock the UI out.

A FastAPI `APIRouter`: auth is a dependency of every route, the request body is read (with its size
limit) and checked into `ChatCompletionRequest` by another, and every refusal, wherever it is raised,
becomes OpenAI's error body through the router's own handler (`OpenAIErrors`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncIterator, Callable

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import schema
from ..answer_tokens import TokenStep
from ..engine import Engine
from ..errors import ChatError, ModelUnloaded, SettingsError
from ..models import ModelList
from ..request import ModelRequest, model_request
from ..settings import GenerationSettings
from ..shelf import ModelShelf
from ..skill_library import SkillLibrary
from ..skills import Skill, SkillBook
from ..store.store import user_owner
from .auth import Accounts, Guard
from .logprobs import choice_logprobs, whole_answer
from .pump import Pump
from .schema import ApiError, ChatRequest

QUEUE_WAIT_S = 30.0  # a request waits this long for a free slot, then gets 429
DRAIN_LIMIT_BYTES = 16 * schema.MAX_BODY_BYTES  # an oversize body is read (and dropped) up to here so
# the client gets to read its 413 instead of a broken pipe; beyond it the connection is just refused
RETRY_AFTER_S = 2


def mount_api(app: Any, engine: Engine | None, skills: SkillBook | SkillLibrary, defaults: GenerationSettings | None = None, instructions: str = "",
              api_key: str | None = None, auth: Accounts = None, max_parallel: int | None = None,
              queue_wait_s: float = QUEUE_WAIT_S, models: ModelList | None = None) -> "ChatApi":
    """Adds the /v1 routes to a FastAPI app (Gradio's `demo.app` included, even after launch).

    Gradio's `auth` does not cover routes added this way: the API checks `api_key`/`auth` itself.
    `models`: the app's model list (without one: `engine` alone). `skills`: the skills file's and users' own (a
    request with an --auth account gets its user's too; one with the API key, the file's).
    """
    if models is None:
        assert engine is not None, "mount_api needs an engine or a model list"
        models = ModelShelf.of(engine)
    engine = engine or models.engine(models.default)
    library = skills if isinstance(skills, SkillLibrary) else SkillLibrary(skills)
    api = ChatApi(models, library, defaults or GenerationSettings(), instructions, Guard(api_key, auth),
                  max_parallel or engine.answers_at_once, queue_wait_s)
    app.include_router(api.router)
    return api


class OpenAIErrors(APIRoute):
    """A route whose refusals (`ApiError`, raised by it or its dependencies) answer in OpenAI's error shape.

    The router's own exception handler: the app is Gradio's, built and started before these routes join it,
    so a handler added to the app would come too late, and would answer for Gradio's routes too."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return error_response(error)

        return answer


async def chat_request(request: Request) -> ChatRequest:
    """The body as a `ChatCompletionRequest`: read up to its size limit, checked, refused (`ApiError`) naming
    the first problem. (Read here, not by FastAPI, for the 413 and the strict JSON OpenAI's clients expect.)"""
    return schema.parse_chat_request(await read_body(request))


class ChatApi:
    """The /v1 routes, bound to the app's model list, its skills and defaults."""

    def __init__(self, models: ModelList, library: SkillLibrary, defaults: GenerationSettings, instructions: str,
                 guard: Guard, max_parallel: int, queue_wait_s: float):
        self.models, self.defaults, self.instructions, self.guard = models, defaults, instructions, guard
        self.library = library
        self.max_parallel, self.queue_wait_s = max_parallel, queue_wait_s
        self._slots = asyncio.Semaphore(max_parallel)
        self.router = APIRouter(prefix="/v1", route_class=OpenAIErrors, dependencies=[Depends(guard.check)])
        self.router.add_api_route("/models", self.list_models, methods=["GET"])
        self.router.add_api_route("/chat/completions", self.chat_completions, methods=["POST"])

    def skills(self, request: Request) -> dict[str, Skill]:
        """The skills a request may name, by id: the file's, and its --auth user's own."""
        user = self.guard.user(request)
        return schema.skill_ids(self.library.book(user_owner(user)) if user else self.library.file_book)

    async def list_models(self, request: Request) -> Response:
        skills = await asyncio.to_thread(self.skills, request)  # (a database query)
        return JSONResponse(_json(schema.models_list(self.models, skills)))

    async def chat_completions(self, chat: Annotated[ChatRequest, Depends(chat_request)], request: Request) -> Response:
        model, skill = schema.requested_model(chat, self.models, await asyncio.to_thread(self.skills, request))
        asked = self.request_for(chat, skill)
        engine = await self._engine(model)
        await self._take_slot()
        pump = await self._started(engine, asked, chat)
        notice = pump.generation.fitted.notice
        headers = {"X-Context-Notice": notice} if notice else {}
        if chat.stream:
            return StreamingResponse(self._events(pump, chat), media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"})
        return await self._whole(pump, chat, request, headers)

    async def _engine(self, model: str) -> Engine:
        """The model's engine, loaded first (in a thread: other requests go on meanwhile) if it isn't."""
        engine = self.models.loaded_engine(model)
        if engine is not None:
            return engine
        try:
            return await asyncio.to_thread(self.models.engine, model)
        except ChatError as error:  # won't fit, or its files are broken
            raise ApiError(503, str(error), "model", "model_not_loadable", kind="server_error") from None

    def request_for(self, chat: ChatRequest, skill: Skill | None) -> ModelRequest:
        """Messages, settings and stop strings for the engine, as the page builds them (chat/request.py)."""
        assert chat.messages is not None  # the request model refuses a request without them
        try:  # only the new message takes the skill: earlier turns were wrapped when they were sent
            return model_request(chat.messages, self.instructions, skill, self.defaults, chat.overrides(), chat.stop,
                                 expand_last=not chat.continue_final_message)
        except SettingsError as error:
            raise ApiError(400, str(error), code="invalid_value") from None

    async def _started(self, engine: Engine, asked: ModelRequest, chat: ChatRequest) -> Pump:
        """The answer, begun in its own thread, which frees the slot taken for it when it ends."""
        stops = asked.stop_strings + self.models.defaults(engine.name).stop_strings
        try:
            fitted = await asyncio.to_thread(engine.prepare, asked.messages, asked.settings, bool(chat.continue_final_message))
            try:
                generation = engine.generate(fitted, asked.settings, stops, tokens=bool(chat.logprobs))
            except ModelUnloaded:  # unloaded since this request got it: loaded again, never an error
                engine = await self._engine(engine.name)
                generation = engine.generate(fitted, asked.settings, stops, tokens=bool(chat.logprobs))
            return Pump(generation, on_done=self._slots.release, tokens=bool(chat.logprobs and chat.stream))
        except ApiError:  # the model was unloaded meanwhile and won't fit now
            self._slots.release()
            raise
        except ChatError as error:  # e.g. the instructions alone overflow the context
            self._slots.release()
            raise ApiError(400, str(error), "messages", "invalid_prompt") from None
        except Exception as error:  # noqa: BLE001 - still an OpenAI-shaped answer, not a bare 500 page
            self._slots.release()
            raise ApiError(500, f"could not start the answer: {type(error).__name__}: {error}", kind="server_error") from None

    async def _take_slot(self) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_wait_s)
        except asyncio.TimeoutError:
            raise ApiError(429, f"the server is busy: {self.max_parallel} answers are being generated; try again shortly",
                           code="rate_limit_exceeded", kind="rate_limit_error",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    async def _events(self, pump: Pump, chat: ChatRequest) -> AsyncIterator[str]:
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

    async def _whole(self, pump: Pump, chat: ChatRequest, request: Request, headers: dict[str, str]) -> Response:
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
