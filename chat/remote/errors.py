"""Server trouble, worded once: each failure of a remote backend becomes one line for the chat.

Connection refused, a wrong key (401), an unknown model (404), a busy server (429), a failing
one (5xx) and a timeout each say what happened and what to do. The key never appears in them.
"""

from __future__ import annotations

from typing import Any

import openai

from ..errors import GenerationError

API_KEY_ENV = "OPENAI_API_KEY"  # where the key comes from when --api-key is not given
MAX_DETAIL_CHARS = 200  # a server's own error text, quoted in a one-line chat message


def explain(error: BaseException, base_url: str, model: str, timeout_s: float) -> GenerationError:
    """One line for the chat, saying what went wrong with the server at `base_url` (serving `model`, given
    `timeout_s` to answer) and what to do."""
    where = f"the model server at {base_url}"
    if isinstance(error, openai.APITimeoutError):
        return GenerationError(f"{where} did not answer within {timeout_s:g} s (timed out): check that it is not overloaded")
    if isinstance(error, openai.APIConnectionError):
        cause = str(error.__cause__ or error)
        reason = "connection refused" if "refused" in cause.lower() else _one_line(cause)
        return GenerationError(f"can't reach {where} ({reason}): is it running?")
    if isinstance(error, openai.APIStatusError):
        return GenerationError(_status_message(error, where, base_url, model))
    if isinstance(error, openai.APIError):  # an error event inside the stream
        return GenerationError(f"{where} reported an error while answering: {_one_line(error.message)}")
    return GenerationError(f"talking to {where} failed: {type(error).__name__}: {_one_line(str(error))}")


def refused_field(error: BaseException, names: tuple[str, ...]) -> str | None:
    """The server's words when `error` is its 400 naming one of `names` as the field it refused (OpenAI's
    errors name it as `param`), else None: then nothing says that field was the trouble."""
    if isinstance(error, openai.BadRequestError) and error.param in names:
        return _server_detail(error)
    return None


def _status_message(error: Any, where: str, base_url: str, model: str) -> str:
    status, detail = error.status_code, _server_detail(error)
    if status == 401:
        return f"{where} refused the API key (401 unauthorized): set --api-key or {API_KEY_ENV}"
    if status == 403:
        return f"{where} denied access (403 forbidden): {detail}"
    if status == 404:
        return (f"{where} has no model {model!r} (404 not found): check --model ({base_url}/models "
                f"lists the served models) and that --base-url ends in /v1")
    if status == 429:
        return f"{where} is busy (429 too many requests): wait a moment before trying again"
    if status >= 500:
        return f"{where} failed (HTTP {status}): {detail}"
    hint = "; set --context-window to the model's context length so long chats get trimmed" if "context" in detail.lower() else ""
    return f"{where} rejected the request (HTTP {status}): {detail}{hint}"


def _server_detail(error: Any) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body
        text = inner.get("message") or inner.get("detail") or body
    else:
        text = body or error.message
    return _one_line(str(text))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"
