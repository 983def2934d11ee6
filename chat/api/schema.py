"""The OpenAI chat-completions request, checked field by field, and the response shapes.

Every mistake in a request becomes one `ApiError` carrying the HTTP status and the OpenAI error
body `{"error": {"message", "type", "param", "code"}}`, so clients (and the official `openai`
library) report it like any other API error. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from ..conversation import is_blank, normalize_messages
from ..engine import Stats, StopReason
from ..errors import ConversationError, SettingsError
from ..settings import SETTINGS, GenerationSettings
from ..skills import Skill, SkillBook

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB of JSON is far more than any chat fits in a context window
MAX_STOP_STRINGS = 16  # OpenAI allows 4; vLLM more. 16 covers every real use
MAX_STOP_CHARS = 200
SKILL_SEPARATOR = ":"  # "<model>:<skill>" picks a skill through the `model` field

# API field -> GenerationSettings field. Unset fields keep the app's defaults, then the skill's.
# (top_k, min_p and repetition_penalty are not OpenAI's, but vLLM's and llama.cpp's.)
SETTING_FIELDS = {
    **{declared.api_field: declared.name for declared in SETTINGS if declared.api_field},
    "max_completion_tokens": "max_new_tokens",  # OpenAI's newer name for max_tokens
}
OTHER_FIELDS = ("model", "messages", "stream", "stream_options", "stop", "skill")
# Sent by clients out of habit and harmless to ignore.
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "safety_identifier", "prompt_cache_key")
# Accepted only at their neutral value: anything else asks for what this server can't do,
# and quietly ignoring it would hand back an answer the client did not ask for.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,), "logprobs": (False,), "top_logprobs": (0,), "frequency_penalty": (0,), "presence_penalty": (0,),
    "logit_bias": ({},), "tools": ([],), "tool_choice": ("none",), "functions": ([],), "response_format": ({"type": "text"},),
}
FINISH_REASONS = {StopReason.MAX_TOKENS: "length"}  # everything else ends as OpenAI's "stop"


class ApiError(Exception):
    """A request the API refuses: HTTP status plus the OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: what to send the engine and how to answer."""

    model: str  # as the client wrote it; echoed in the response
    messages: list[dict[str, str]]
    skill: Skill | None
    overrides: dict[str, Any]  # GenerationSettings fields the client set
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def skill_ids(skills: SkillBook) -> dict[str, Skill]:
    """A short ASCII id per skill ("🔄 Translate to German" -> "translate-to-german"), in file order.

    Two skills whose ids would collide keep the second one's exact name as its id.
    """
    ids: dict[str, Skill] = {}
    for skill in skills:
        ascii_name = unicodedata.normalize("NFKD", skill.name).encode("ascii", "ignore").decode().lower()
        slug = "-".join(re.findall(r"[a-z0-9]+", ascii_name))
        ids[slug if slug and slug not in ids else skill.name] = skill
    return ids


def parse_json(body: bytes) -> dict[str, Any]:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object such as {\"model\": ..., \"messages\": [...]}", code="invalid_json")
    return data


def parse_chat_request(data: dict[str, Any], served_model: str, skills: Mapping[str, Skill]) -> ChatRequest:
    """Checks every field; raises `ApiError` naming the first problem."""
    _check_field_names(data)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required: the served model's name (GET /v1/models lists it)", "model", "missing_required_parameter")
    return ChatRequest(
        model=model,
        messages=_messages(data.get("messages")),
        skill=_skill(model, data.get("skill"), served_model, skills),
        overrides=_overrides(data),
        stop=_stop(data.get("stop")),
        stream=_flag(data, "stream"),
        include_usage=_include_usage(data.get("stream_options")),
    )


def _check_field_names(data: dict[str, Any]) -> None:
    for name, value in data.items():
        if name in SETTING_FIELDS or name in OTHER_FIELDS or name in IGNORED_FIELDS:
            continue
        if name in NEUTRAL_VALUES:
            if value is None or any(_same(value, neutral) for neutral in NEUTRAL_VALUES[name]):
                continue
            raise ApiError(400, f"{name}={json.dumps(value)[:80]} is not supported by this server", name, "unsupported_value")
        raise ApiError(400, f"unrecognized request argument supplied: {name}", name, "unknown_parameter")


def _same(value: Any, neutral: Any) -> bool:
    if isinstance(value, bool) or isinstance(neutral, bool):  # `n: true` is not `n: 1`
        return value is neutral
    return value == neutral  # 0 == 0.0


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise ApiError(400, "messages is required: a list like [{\"role\": \"user\", \"content\": \"Hi\"}]", "messages", "missing_required_parameter")
    if not isinstance(value, list):
        raise ApiError(400, "messages must be a list of {role, content} objects", "messages", "invalid_type")
    try:
        messages = normalize_messages(value, "messages")
    except ConversationError as error:
        raise ApiError(400, str(error), "messages", "invalid_value") from None
    if not messages:
        raise ApiError(400, "messages must not be empty", "messages", "invalid_value")
    if messages[-1]["role"] != "user":
        raise ApiError(400, f"the last message must be the user's, not {messages[-1]['role']!r}", "messages", "invalid_value")
    if is_blank(messages[-1]["content"]):  # as the page's "type a message first": nothing to answer
        raise ApiError(400, "the last message is empty: send the text to answer", "messages", "invalid_value")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _skill(model: str, field: Any, served_model: str, skills: Mapping[str, Skill]) -> Skill | None:
    if field is not None and not isinstance(field, str):
        raise ApiError(400, "skill must be a skill's name or id (text)", "skill", "invalid_type")
    suffix = None
    if model != served_model:
        prefix = served_model + SKILL_SEPARATOR
        if not model.startswith(prefix) or _find(model[len(prefix):], skills) is None:
            known = ", ".join([served_model] + [prefix + sid for sid in skills])
            raise ApiError(404, f"the model {model!r} does not exist; this server has: {known}", "model", "model_not_found")
        suffix = _find(model[len(prefix):], skills)
    named = None
    if field:
        named = _find(field, skills)
        if named is None:
            raise ApiError(400, f"unknown skill {field!r}; known skills: {', '.join(skills)}", "skill", "unknown_skill")
    if suffix is not None and named is not None and suffix is not named:
        raise ApiError(400, f"model names skill {suffix.name!r} but skill names {named.name!r}: pick one", "skill", "conflicting_skill")
    return named or suffix


def _find(name: str, skills: Mapping[str, Skill]) -> Skill | None:
    """A skill by its id or its exact name."""
    return skills.get(name) or next((s for s in skills.values() if s.name == name), None)


def _overrides(data: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for api_name, field in SETTING_FIELDS.items():
        value = data.get(api_name)
        if value is None:
            continue
        try:
            GenerationSettings().replace(**{field: value})
        except SettingsError as error:
            message = str(error).replace(field, api_name, 1)
            raise ApiError(400, message, api_name, "invalid_value") from None
        overrides[field] = value
    return overrides


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of them", "stop", "invalid_type")
    if len(stops) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_CHARS} characters", "stop", "invalid_value")
    return tuple(stops)


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", name, "invalid_type")
    return bool(value)


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object such as {\"include_usage\": true}", "stream_options", "invalid_type")
    return _flag(options, "include_usage")


# -- responses ------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(stats: Stats) -> dict[str, int]:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.new_tokens,
            "total_tokens": stats.prompt_tokens + stats.new_tokens}


def completion(cid: str, model: str, text: str, stats: Stats) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": FINISH_REASONS.get(stats.stop_reason, "stop")}],
        "usage": usage(stats),
    }


def chunk(cid: str, model: str, delta: dict[str, Any] | None = None, finish: Stats | None = None,
          stats_usage: Stats | None = None) -> dict[str, Any]:
    """One SSE chunk: a text delta, the closing finish_reason, or (choices empty) the usage."""
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if stats_usage is not None:
        body.update(choices=[], usage=usage(stats_usage))
    else:
        reason = FINISH_REASONS.get(finish.stop_reason, "stop") if finish is not None else None
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": reason}]
    return body


def models_list(served_model: str, skills: Mapping[str, Skill]) -> dict[str, Any]:
    """The served model, then one entry per skill: `<model>:<skill id>`."""
    created = int(time.time())
    entries = [{"id": served_model, "object": "model", "created": created, "owned_by": "chat-workbench"}]
    for sid, skill in skills.items():
        entries.append({"id": f"{served_model}{SKILL_SEPARATOR}{sid}", "object": "model", "created": created,
                        "owned_by": "chat-workbench", "skill": skill.name, "description": skill.description})
    return {"object": "list", "data": entries}
