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
from typing import Any, Callable

import openai

from ..context_window import FittedPrompt, fit_to_context
from ..engine import SessionCache
from ..errors import ChatError
from ..formats import Messages, Prompt, PromptFormat, Segment, render
from ..settings import GenerationSettings
from .errors import API_KEY_ENV
from .generation import RemoteGeneration
from .servers import UNKNOWN, ServerInfo, probe
from .logprobs import ASK

BACKENDS = ("local", "openai")
NO_KEY = "none"  # servers without auth ignore the key, but the client insists on one
DEFAULT_CONTEXT_WINDOW = 32_768  # the server knows the real one; --context-window tells us
CHARS_PER_TOKEN = 3  # pessimistic (English averages ~4): trim a little early rather than be refused
MESSAGE_FRAMING_TOKENS = 4  # a chat template's role markers around each message, by estimate
CONNECT_TIMEOUT_S = 10.0  # a server that doesn't accept a connection in 10 s is down, not busy
READ_TIMEOUT_S = 120.0  # longest wait for the server's next piece of text
MAX_RETRIES = 0  # the chat has a Retry button; silent retries would only delay the error message
SERVER_STOP_LIMIT = 4  # api.openai.com takes at most 4 `stop` strings; the rest are cut here
REPROBE_S = 30.0  # while the server is unreachable, ask again at most this often (it may have come up)
PROMPT_HEADER = "Sent to {url} as chat messages for {model!r}; the server applies its own chat template.\n"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --base-url, --api-key, --context-window, --standard-sampling."""
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local: run --model here; openai: use an OpenAI-compatible server (vLLM, TGI, llama.cpp, "
                       "another instance of this app) at --base-url, serving --model")
    group.add_argument("--base-url", metavar="URL",
                       help="an OpenAI-compatible server's API root, e.g. http://gpu-box:8000/v1: its models join the model list "
                       "(with --backend openai, they are the list)")
    group.add_argument("--api-key", metavar="KEY",
                       help=f"the key clients must send to this app's /v1 API. The server at --base-url gets "
                       f"${API_KEY_ENV}, or this key when that is unset. Prefer the environment: flags show in `ps`")
    group.add_argument("--context-window", type=int, metavar="TOKENS",
                       help=f"a smaller context than the model's (local models: less KV cache to estimate and keep). With "
                       f"--backend openai: the served model's context length, for trimming long chats; default what the "
                       f"server reports (vLLM, llama.cpp's llama-server, TGI, Ollama), else {DEFAULT_CONTEXT_WINDOW}")
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
        self.check_flags(base_url, model, need_model=True)
        assert base_url is not None and model is not None
        self.base_url = base_url.rstrip("/")
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

    @staticmethod
    def check_flags(base_url: str | None, model: str | None, need_model: bool = False) -> None:
        """Raises the `ChatError` that says which flag is missing (--model may be left out where the server lists its models)."""
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ChatError("--backend openai needs --base-url http(s)://HOST:PORT/v1, the server's API root")
        if need_model and not model:
            raise ChatError(f"--backend openai needs --model NAME, the served model's name ({base_url.rstrip('/')}/models lists them)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, say: Callable[[str], None] = print) -> "RemoteEngine":
        # --api-key is first this app's own API key; the server's own key, if it has one, wins.
        key = os.environ.get(API_KEY_ENV) or getattr(args, "api_key", None)
        model = args.model[0] if isinstance(args.model, list) else args.model
        engine = cls(args.base_url, model, key, getattr(args, "context_window", None), getattr(args, "standard_sampling", False))
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
