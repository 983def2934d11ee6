"""A remote backend: any OpenAI-compatible server (vLLM, TGI, llama.cpp's server, this app's own API).

`RemoteEngine` is an `Engine` like the local one, so `ChatSession`, the UI and the terminal chat
work unchanged. What differs is who owns what: the server applies its own chat template,
tokenizer, batching and caching, so `prepare` hands over *messages* (no token ids) and
`generate` streams the server's chat completions through the official `openai` client.

>>> engine = RemoteEngine("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from queue import Empty, Queue
from typing import Any, Callable, Iterator

import openai

from ..context_window import FittedPrompt, fit_to_context
from ..engine import Generation, SessionCache, StopReason
from ..errors import ChatError, GenerationError
from ..formats import Messages, Prompt, PromptFormat, Segment, render
from ..settings import GenerationSettings
from ..answer_tokens import TokenLog
from .errors import API_KEY_ENV, explain, refused_field
from .servers import UNKNOWN, ServerInfo, probe
from .logprobs import ASK, ServerTokens

BACKENDS = ("local", "openai")
NO_KEY = "none"  # servers without auth ignore the key, but the client insists on one
DEFAULT_CONTEXT_WINDOW = 32_768  # the server knows the real one; --context-window tells us
CHARS_PER_TOKEN = 3  # pessimistic (English averages ~4): trim a little early rather than be refused
MESSAGE_FRAMING_TOKENS = 4  # a chat template's role markers around each message, by estimate
CONNECT_TIMEOUT_S = 10.0  # a server that doesn't accept a connection in 10 s is down, not busy
READ_TIMEOUT_S = 120.0  # longest wait for the server's next piece of text
MAX_RETRIES = 0  # the chat has a Retry button; silent retries would only delay the error message
SERVER_STOP_LIMIT = 4  # api.openai.com takes at most 4 `stop` strings; the rest are cut here
POLL_S = 0.1  # how often a waiting reader checks for Stop
# Closing waits this long for the worker, which closes the stream on the server's next chunk.
# A stalled server would hold it until the read timeout: Stop must not wait for that.
CLOSE_WAIT_S = 1.0
REPROBE_S = 30.0  # while the server is unreachable, ask again at most this often (it may have come up)
PROMPT_HEADER = "Sent to {url} as chat messages for {model!r}; the server applies its own chat template.\n"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --base-url, --api-key, --context-window, --standard-sampling."""
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local: run --model here; openai: use an OpenAI-compatible server (vLLM, TGI, llama.cpp, "
                       "another instance of this app) at --base-url, serving --model")
    group.add_argument("--base-url", metavar="URL", help="with --backend openai: the server's API root, e.g. http://gpu-box:8000/v1")
    group.add_argument("--api-key", metavar="KEY",
                       help=f"the key clients must send to this app's /v1 API. With --backend openai the server gets "
                       f"${API_KEY_ENV}, or this key when that is unset. Prefer the environment: flags show in `ps`")
    group.add_argument("--context-window", type=int, metavar="TOKENS",
                       help=f"with --backend openai: the served model's context length, for trimming long chats. "
                       f"Default: what the server reports (vLLM, llama.cpp's llama-server, TGI, Ollama), "
                       f"else {DEFAULT_CONTEXT_WINDOW}; a smaller value limits it further")
    group.add_argument("--standard-sampling", action="store_true",
                       help="with --backend openai: send only the OpenAI API's own sampling fields (for api.openai.com "
                       "and other strict servers); top_k, min_p and repetition_penalty (and a server's own names for "
                       "them, e.g. llama.cpp's repeat_penalty) are then not sent")


class MessagesFormat:
    """The 'format' of a remote engine: plain messages; the server owns the real template."""

    name = "openai-messages"
    stop_strings: tuple[str, ...] = ()  # the server stops at the model's end-of-turn itself
    strips_answer_space = False

    def segments(self, messages: Messages, continue_final: bool = False) -> list[Segment]:
        """The messages as sent, each under its role (a readable stand-in for the server's template)."""
        return [segment for m in messages for segment in ((f"\n── {m['role']} ──\n", False), (m["content"], True), ("\n", False))]


class RemoteEngine:
    """Chats through an OpenAI-compatible server (an `Engine`). The API key is kept in the client, never shown."""

    exact_prompt = False  # the server renders and tokenizes the messages itself
    shares_steps = True  # serving engines batch the answers they get at once
    answers_at_once = 32  # and serve many at once

    def __init__(self, base_url: str | None, model: str | None, api_key: str | None = None,
                 context_window: int | None = None, standard_sampling: bool = False, timeout_s: float = READ_TIMEOUT_S):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ChatError("--backend openai needs --base-url http(s)://HOST:PORT/v1, the server's API root")
        self.base_url = base_url.rstrip("/")
        if not model:
            raise ChatError(f"--backend openai needs --model NAME, the served model's name ({self.base_url}/models lists them)")
        if context_window is not None and context_window < 2:
            raise ChatError(f"--context-window must be at least 2 tokens, got {context_window}")
        self.name, self.device = model, f"remote server {self.base_url}"
        self.revision: str | None = None  # the server does not say
        self.asked_window = context_window  # --context-window, if given
        self.context_window = context_window or DEFAULT_CONTEXT_WINDOW
        self.window_source = "--context-window" if context_window else f"assumed: the server did not say; --context-window sets it"
        self.server: ServerInfo = UNKNOWN  # what `connect` learned about the server
        self._probed_at: float | None = None
        self._down = False  # the last probe could not reach the server
        self._say: Callable[[str], None] = print
        self.format: PromptFormat = MessagesFormat()
        self.standard_sampling, self.timeout_s = standard_sampling, timeout_s
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or NO_KEY
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key,
            max_retries=MAX_RETRIES, timeout=openai.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S)),
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace, say: Callable[[str], None] = print) -> "RemoteEngine":
        # --api-key is first this app's own API key; the server's own key, if it has one, wins.
        key = os.environ.get(API_KEY_ENV) or getattr(args, "api_key", None)
        engine = cls(args.base_url, args.model, key, getattr(args, "context_window", None), getattr(args, "standard_sampling", False))
        engine.connect(say)
        return engine

    def connect(self, say: Callable[[str], None] = print) -> ServerInfo:
        """Asks the server what it is and how long its context is; says what was found, or that it is
        down (the app starts anyway: answers fail with a clear message until the server is up)."""
        self._probed_at, self._say = time.monotonic(), say
        server = probe(self.base_url, self.name, None if self._api_key == NO_KEY else self._api_key)
        self._down = not server.reachable
        if self._down:
            say(f"warning: can't reach the model server at {self.base_url} ({server.problem}); starting anyway: "
                "answers fail until it is up")
            return server
        self.server = server
        self.context_window, self.window_source, warning = self._window_from(server)
        if warning:
            say(f"warning: {warning}")
        kind = "" if server.kind == "unknown" else f" ({server.kind})"
        say(f"Model server{kind}: {self.base_url}, model {self.name!r}, context window {self.context_window:,} tokens "
            f"({self.window_source})")
        return server

    def _window_from(self, server: ServerInfo) -> tuple[int, str, str | None]:
        """(context window, where it comes from, a warning or None): the server's figure where it gives
        one; --context-window where it doesn't, or to limit it further."""
        asked, told = self.asked_window, server.context_window
        assumed = server.window_source.startswith("assumed")
        if told is None or (asked is not None and (assumed or asked <= told)):
            return (asked, "--context-window", None) if asked else (self.context_window, self.window_source, None)
        if asked is not None and asked > told:
            return told, server.window_source, (f"--context-window {asked:,} is more than the server's {told:,} tokens "
                                                f"({server.window_source}): using {told:,}")
        return told, server.window_source, None

    def _reconnect_if_down(self) -> None:
        """A server that was down at start-up may be up now: ask again (at most every REPROBE_S)."""
        if self._down and self._probed_at is not None and time.monotonic() - self._probed_at >= REPROBE_S:
            say = self._say
            self.connect(say=lambda line: None if line.startswith("warning: can't reach") else say(line))

    def __repr__(self) -> str:  # names the server, never the key
        return f"RemoteEngine({self.base_url!r}, {self.name!r})"

    def prepare(self, messages: Messages, settings: GenerationSettings, continues: bool = False) -> FittedPrompt:
        """Fits `messages` with an estimate of ~1 token per CHARS_PER_TOKEN characters.

        No token ids leave this machine: `prompt.ids` is empty and `prompt.text` is a readable
        rendering of the messages, since the server, not this app, renders the real prompt.
        """
        self._reconnect_if_down()
        fitted = fit_to_context(
            messages,
            encode=lambda candidate: Prompt(text="", ids=[], estimated_length=estimate_tokens(candidate)),
            # "Tokens" are character chunks here, so cutting a message keeps whole characters.
            tokenize=lambda text: [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)],
            detokenize="".join,
            context_window=self.context_window,
            max_new_tokens=settings.max_new_tokens,
            continues=continues,
        )
        text = self.render(fitted.messages)
        return dataclasses.replace(fitted, prompt=Prompt(text=text, ids=[], estimated_length=fitted.prompt.length))

    def render(self, messages: Messages) -> str:
        """What the Prompt view shows: the messages as sent, and who applies the template."""
        header = PROMPT_HEADER.format(url=self.base_url, model=self.name)
        body = render(self.format, messages)
        return f"{header}(about {estimate_tokens(messages)} tokens by estimate)\n{body}"

    def prompt_tokens(self, fitted: FittedPrompt, typed: str | None = None) -> None:
        return None  # the server tokenizes the messages itself: this app never sees the prompt's tokens

    def generate(self, fitted: FittedPrompt, settings: GenerationSettings, extra_stop_strings: tuple[str, ...] = (),
                 cache: SessionCache | None = None, tokens: bool = False) -> "RemoteGeneration":
        """Starts streaming the answer in a worker thread; iterate the result for text. `tokens`: ask the
        server for each token's logprob and alternatives too (see logprobs.py)."""
        return RemoteGeneration(self, fitted, settings, tuple(dict.fromkeys(s for s in extra_stop_strings if s)), tokens)

    def new_cache(self) -> None:
        return None  # the server keeps its own prefix cache

    def request(self, fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
                tokens: bool = False) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for one answer (`tokens`: with its logprobs)."""
        fields: dict[str, Any] = {
            "model": self.name,
            "messages": [{"role": m["role"], "content": m["content"]} for m in fitted.messages],
            "stream": True,
            "stream_options": {"include_usage": True},  # token counts arrive in the last chunk
        }
        standard = settings.api_fields(standard_only=True)  # temperature 0 = greedy on every server we know
        fields.update(standard, max_tokens=fitted.max_new_tokens)
        if stop_strings:  # all of them are also applied here as the text arrives
            fields["stop"] = list(stop_strings[:SERVER_STOP_LIMIT])
        if tokens:  # OpenAI's own fields: sent even with --standard-sampling
            fields.update(ASK)
        extensions = {name: value for name, value in settings.api_fields().items() if name not in standard}
        for name, alias in self.server.aliases().items():  # e.g. llama.cpp reads repeat_penalty
            if name in extensions:
                extensions[alias] = extensions[name]
        if fitted.continues:
            # More of the last (assistant) message: vLLM and this app read these fields; llama.cpp's server
            # continues a final assistant message by itself.
            extensions.update(continue_final_message=True, add_generation_prompt=False)
        if extensions and not self.standard_sampling:  # vLLM and llama.cpp's server read these, as does this app
            fields["extra_body"] = extensions
        return fields


def estimate_tokens(messages: Messages) -> int:
    """A rough token count: characters / CHARS_PER_TOKEN, plus a few for each message's framing.

    (Rounded up, so it equals what trimming counts: the message cut in chunks of CHARS_PER_TOKEN.)
    """
    return sum(-(-len(m["content"]) // CHARS_PER_TOKEN) + MESSAGE_FRAMING_TOKENS for m in messages)


_END = object()  # the worker's last word on the queue


class RemoteGeneration(Generation):
    """One answer streaming from the server through the `openai` client, read in a worker thread."""

    THREAD_NAME = "remote-generate"
    # The worker closes the stream on the server's next chunk; a stalled server would hold it until
    # the read timeout, and Stop must not wait for that.
    CLOSE_WAIT_S = 1.0

    def __init__(self, engine: RemoteEngine, fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
                 tokens: bool = False):
        super().__init__(fitted, settings, stop_strings)
        self.engine = engine
        kind = "" if engine.server.kind == "unknown" else f", {engine.server.kind}"
        self._tokens = ServerTokens(f"the model server at {engine.base_url} (model {engine.name!r}{kind})") if tokens else None
        self._queue: Queue = Queue()
        self._first: float | None = None
        self._last: float | None = None
        self._pieces = 0
        self._usage: Any = None
        self._finish_reason: str | None = None
        self._server_stop_string = False
        self._start()

    def _release(self) -> None:
        self._cancel.set()  # not close(): a reader that stops early must not wait for the network

    def _chunks(self) -> Iterator[str]:
        while not self._cancel.is_set():
            try:
                item = self._queue.get(timeout=POLL_S)
            except Empty:
                if not self._worker.is_alive() and self._queue.empty():
                    return
                continue
            if item is _END:
                return
            yield item

    def _run(self) -> None:
        try:
            stream = self._open_stream()
            with stream:  # leaving it closes the connection: that is how the server learns of a Stop
                for chunk in stream:
                    if self._cancel.is_set():
                        break
                    self._take(chunk)
            if not self._cancel.is_set() and self._finish_reason is None:
                self._error = self._unfinished_error()
            elif self._tokens is not None and not self._cancel.is_set():
                self._tokens.end()
        except Exception as error:  # noqa: BLE001 - every failure reaches the reader, worded once
            if not self._cancel.is_set():
                self._error = explain(error, self.engine.base_url, self.engine.name, self.engine.timeout_s)
        finally:
            self._queue.put(_END)

    def _open_stream(self) -> Any:
        request = self.engine.request(self.fitted, self.settings, self._filter.stop_strings, tokens=self._tokens is not None)
        try:
            return self.engine.client.chat.completions.create(**request)
        except openai.BadRequestError as error:
            # A server that can't give logprobs (OpenAI's reasoning models) and says so by naming the
            # field: the answer matters more than its token data. Any other refusal is reported.
            refused = refused_field(error, tuple(ASK))
            if self._tokens is None or refused is None:
                raise
            self._tokens.refused = refused
            return self.engine.client.chat.completions.create(**{k: v for k, v in request.items() if k not in ASK})

    def _recorded_tokens(self) -> TokenLog | None:
        return self._tokens.log() if self._tokens is not None else None

    def _unfinished_error(self) -> GenerationError:
        """The stream ended without saying why: the server failed inside the answer (its log says why)."""
        if not self._pieces:
            return self._overflow_error()
        hint = (" (llama-cpp-python's server ends an answer when another request arrives, unless started with "
                "--interrupt_requests False)" if self.engine.server.kind == "llama-cpp-python" else "")
        return GenerationError(f"the model server at {self.engine.base_url} stopped sending the answer before it "
                               f"ended (no finish reason): its log may say why{hint}")

    def empty_answer_error(self) -> GenerationError:
        # No text and no room (or no reason) is a full context; no text at the model's own end is the model's choice.
        return self._overflow_error() if self._finish_reason in (None, "length") else super().empty_answer_error()

    def _overflow_error(self) -> GenerationError:
        engine = self.engine
        return GenerationError(
            f"the model server at {engine.base_url} sent back an empty answer. Most often the chat has outgrown the "
            f"server's context window (this app counts {engine.context_window:,} tokens: {engine.window_source}): "
            f"start the server with a larger one (llama.cpp: --n_ctx) or set --context-window to the server's size, "
            f"so that long chats are trimmed to fit")

    def _take(self, chunk: Any) -> None:
        if getattr(chunk, "usage", None) is not None:
            self._usage = chunk.usage
        for choice in chunk.choices or ():
            content = getattr(choice.delta, "content", None) if choice.delta else None
            if self._tokens is not None:  # before its text reaches the reader, who looks for its tokens
                self._tokens.take(content or "", getattr(choice, "logprobs", None))
            if content:
                now = time.perf_counter()
                self._first, self._last = self._first or now, now
                self._pieces += 1
                self._queue.put(content)
            if choice.finish_reason:
                self._finish_reason = choice.finish_reason
                # vLLM names the stop string that ended the answer (None for end-of-sequence).
                self._server_stop_string = isinstance(getattr(choice, "stop_reason", None), str)

    def _finish_stats(self) -> None:
        usage = self._usage
        if usage is not None and usage.prompt_tokens and usage.completion_tokens is not None:
            self.stats.prompt_tokens = usage.prompt_tokens  # exact, where the server says
            self.stats.estimated = False
        super()._finish_stats()
        if self.stats.stop_reason is StopReason.EOS and self._filter.stop_strings and self._finish_reason == "stop":
            self.stats.stop_reason = StopReason.SERVER_STOP  # it may have been one of the stop strings we sent

    def _token_counts(self) -> tuple[int, int]:
        # Servers send about one token per chunk (an estimate, marked so); usage, when sent, is exact.
        usage = self._usage
        count = usage.completion_tokens if usage is not None and usage.completion_tokens is not None else self._pieces
        return count, count

    def _first_and_last_token_times(self) -> tuple[float | None, float | None]:
        return self._first, self._last

    def _stopped_at_string(self) -> bool:
        return self._server_stop_string

    def _hit_token_limit(self) -> bool:
        return self._finish_reason == "length"
