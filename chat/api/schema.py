"""The OpenAI chat-completions request as pydantic models, and the responses as the `openai` package's types.

Every mistake in a request becomes one `ApiError` carrying the HTTP status and the OpenAI error
body `{"error": {"message", "type", "param", "code"}}`, so clients (and the official `openai`
library) report it like any other API error. Validation failures reach it through `api_error`,
the one place that turns pydantic's findings into OpenAI's codes. Nothing here does I/O.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal, Mapping, NoReturn

from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError, \
    model_validator, ValidationInfo, create_model
from pydantic_core import PydanticCustomError

from ..messages import is_blank, normalize_messages
from ..models import ModelList as ModelList_  # (this module's `ModelList` is /v1/models' body)
from ..engine import Stats, StopReason
from ..errors import ConversationError, SettingsError
from ..settings import SETTINGS, GenerationSettings, Setting
from ..remote.servers import OWN_MODELS_OWNER  # how clients (this app among them) recognise it
from ..skills import Skill, SkillBook
from ..answer_tokens import TOP

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB of JSON is far more than any chat fits in a context window
MAX_STOP_STRINGS = 16  # OpenAI allows 4; vLLM more. 16 covers every real use
MAX_STOP_CHARS = 200
SKILL_SEPARATOR = ":"  # "<model>:<skill>" picks a skill through the `model` field

# Request field -> its setting. Unset fields keep the app's defaults, then the skill's.
SETTING_FIELDS: dict[str, Setting] = {declared.api_field: declared for declared in SETTINGS if declared.api_field}
SETTING_FIELDS["max_completion_tokens"] = SETTING_FIELDS["max_tokens"]  # OpenAI's newer name for max_tokens
# Sent by clients out of habit and harmless to ignore.
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "safety_identifier", "prompt_cache_key")
# Accepted only at their neutral value: anything else asks for what this server can't do,
# and quietly ignoring it would hand back an answer the client did not ask for.
NEUTRAL_VALUES: dict[str, Any] = {
    "n": 1, "frequency_penalty": 0, "presence_penalty": 0,
    "logit_bias": {}, "tools": [], "tool_choice": "none", "functions": [], "response_format": {"type": "text"},
}
REPORTED_FIRST = ("extra_forbidden", "unsupported_value")  # see `api_error`
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


def api_error(error: ValidationError) -> ApiError:
    """The request's first problem as OpenAI reports it: a 400 naming the field as `param`, with a code.

    A field this server doesn't know or can't honour goes first, as it often explains the rest. The
    checks below raise errors whose type is the OpenAI code; pydantic's own are unknown, missing or
    mistyped fields.
    """
    first = min(error.errors(include_url=False), key=lambda problem: problem["type"] not in REPORTED_FIRST)
    # (A check of the whole request, such as which message comes last, has no field: it concerns the messages.)
    param, kind = str(first["loc"][-1]) if first["loc"] else "messages", first["type"]
    if kind == "extra_forbidden":
        return ApiError(400, f"unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if kind == "missing":
        return ApiError(400, f"{param} is required", param, "missing_required_parameter")
    if "message" in first.get("ctx", {}):  # from `_refuse`
        return ApiError(400, first["msg"], param, kind)
    return ApiError(400, f"{param}: {first['msg']}", param, "invalid_type")


def _refuse(code: str, message: str) -> NoReturn:
    """Fails validation with the OpenAI `code` as the error's type, for `api_error` to pass on."""
    # A message holding braces would be read as a template: it goes in as the context instead.
    raise PydanticCustomError(code, "{message}", {"message": message})


# -- the request ------------------------------------------------------------------------------------


def _model_name(value: Any) -> Any:
    """A `model` that names nothing (null, "", a number) is reported as missing: no model was picked."""
    if not isinstance(value, str) or not value:
        _refuse("missing_required_parameter", "model is required: the served model's name (GET /v1/models lists it)")
    return value


def _chat_messages(value: list[Any] | None) -> list[dict[str, str]]:
    if value is None:
        _refuse("missing_required_parameter", "messages is required: a list like [{\"role\": \"user\", \"content\": \"Hi\"}]")
    try:
        messages = normalize_messages(value, "messages")
    except ConversationError as error:
        _refuse("invalid_value", str(error))
    if not messages:
        _refuse("invalid_value", "messages must not be empty")
    if messages[-1]["role"] == "system":
        _refuse("invalid_value", "the last message must be the user's, not 'system'")
    if is_blank(messages[-1]["content"]):  # as the page's "type a message first": nothing to answer
        _refuse("invalid_value", "the last message is empty: send the text to answer")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _stop_strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        _refuse("invalid_type", "stop must be a non-empty string or a list of them")
    if len(stops) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in stops):
        _refuse("invalid_value", f"stop takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_CHARS} characters")
    return tuple(stops)


def _top_logprobs(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= TOP):
        _refuse("invalid_value", f"top_logprobs must be an integer from 0 to {TOP}")
    return value


def _needs_logprobs(value: int | None, info: ValidationInfo) -> int | None:
    # OpenAI's rule. 0 asks for nothing, and was accepted before logprobs were (as vLLM accepts it).
    if value and not info.data.get("logprobs"):
        _refuse("invalid_value", "top_logprobs needs logprobs: true (the alternatives come with each token's logprob)")
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI keeps adding options here; none changes the answer

    include_usage: StrictBool | None = None


class ChatRequest(BaseModel):
    """The fields this API reads besides the sampling settings (see `ChatCompletionRequest`).

    As in OpenAI's API, `null` is a field left unset.
    """

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, BeforeValidator(_model_name)]  # as the client wrote it; echoed in the response
    messages: Annotated[list[Any] | None, AfterValidator(_chat_messages)]
    skill: StrictStr | None = None
    stop: Annotated[tuple[str, ...], BeforeValidator(_stop_strings)] = ()
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    # vLLM's extension (the page's Continue through another instance): more of the last (assistant) message.
    continue_final_message: StrictBool | None = None
    add_generation_prompt: StrictBool | None = None
    # Each token of the answer with its logprob, and with `top_logprobs` of its likeliest alternatives (logprobs.py).
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt | None, BeforeValidator(_top_logprobs), AfterValidator(_needs_logprobs)] = None

    @model_validator(mode="after")
    def _last_message_fits_the_request(self) -> "ChatRequest":
        last = self.messages[-1]["role"] if self.messages else "user"
        if self.continue_final_message and last != "assistant":
            _refuse("invalid_value", f"continue_final_message needs the answer to continue last, not a {last!r} message")
        if not self.continue_final_message and last != "user":
            _refuse("invalid_value", f"the last message must be the user's, not {last!r} "
                    "(continue_final_message: true continues an answer)")
        if self.continue_final_message and self.add_generation_prompt:
            _refuse("invalid_value", "continue_final_message and add_generation_prompt can't both be true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def overrides(self) -> dict[str, Any]:
        """The GenerationSettings fields the client set (by either name, the later one winning)."""
        sent = self.model_dump(include=set(SETTING_FIELDS), exclude_none=True)
        return {SETTING_FIELDS[field].name: value for field, value in sent.items()}


def _sampling_field(field: str, declared: Setting) -> tuple[Any, Any]:
    """An optional request field for a setting, checked by the settings' own rules and words."""
    def in_range(value: Any) -> Any:
        if value is None:
            return None
        try:
            return getattr(GenerationSettings().replace(**{declared.name: value}), declared.name)
        except SettingsError as error:
            _refuse("invalid_value", str(error).replace(declared.name, field, 1))

    return Annotated[declared.kind | None, BeforeValidator(in_range)], None


def _neutral_field(neutral: Any) -> tuple[Any, Any]:
    def only_neutral(value: Any, info: ValidationInfo) -> Any:
        if value is not None and not _same(value, neutral):
            _refuse("unsupported_value", f"{info.field_name}={json.dumps(value)[:80]} is not supported by this server")
        return value

    return Annotated[Any, AfterValidator(only_neutral)], None


def _same(value: Any, neutral: Any) -> bool:
    if isinstance(value, bool) or isinstance(neutral, bool):  # `n: true` is not `n: 1`
        return value is neutral
    return value == neutral  # 0 == 0.0


# The whole request: built from the tables above, so that a setting declared in chat/settings.py
# with an `api_field` is a request field with no edit here.
ChatCompletionRequest = create_model(  # type: ignore[call-overload]  # its stubs can't type fields made at run time
    "ChatCompletionRequest", __base__=ChatRequest,
    **{field: _sampling_field(field, declared) for field, declared in SETTING_FIELDS.items()},
    **{name: _neutral_field(neutral) for name, neutral in NEUTRAL_VALUES.items()},
    **{name: (Any, None) for name in IGNORED_FIELDS},
)


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


def parse_chat_request(body: bytes) -> ChatRequest:
    """A `ChatCompletionRequest`; raises `ApiError` naming the first problem."""
    try:
        return ChatCompletionRequest.model_validate(parse_json(body))
    except ValidationError as error:
        raise api_error(error) from None


# -- skills ---------------------------------------------------------------------------------------


def skill_ids(skills: SkillBook) -> dict[str, Skill]:
    """Each skill by its id, in the book's order: its /command ("🔄 Translate to German" -> "translate-to-german"),
    unique in a book."""
    return {skill.command: skill for skill in skills}


def requested_model(request: ChatRequest, models: ModelList_, skills: Mapping[str, Skill]) -> tuple[str, Skill | None]:
    """(the model, the skill) the request names: `model` is a model of the list (by its name, or its base
    model's: the default variant), or `<model>:<skill id>`; the `skill` field names one too. Raises `ApiError`:
    404 for a model the list doesn't have, 400 for an unknown or conflicting skill."""
    model, suffix = models.find(request.model), None
    if model is None and SKILL_SEPARATOR in request.model:
        named_model, _, skill_id = request.model.rpartition(SKILL_SEPARATOR)
        model, suffix = models.find(named_model), _find(skill_id, skills)
        if model is not None and suffix is None:
            raise ApiError(404, f"the model {request.model!r} does not exist: {named_model!r} has no skill {skill_id!r}; "
                           f"skills: {', '.join(skills)}", "model", "model_not_found")
    if model is None:
        raise ApiError(404, f"the model {request.model!r} does not exist; GET /v1/models lists this server's models: "
                       f"{', '.join(models.names())}", "model", "model_not_found")
    named = None
    if request.skill:
        named = _find(request.skill, skills)
        if named is None:
            raise ApiError(400, f"unknown skill {request.skill!r}; known skills: {', '.join(skills)}", "skill", "unknown_skill")
    if suffix is not None and named is not None and suffix is not named:
        raise ApiError(400, f"model names skill {suffix.name!r} but skill names {named.name!r}: pick one", "skill", "conflicting_skill")
    return model, named or suffix


def _find(name: str, skills: Mapping[str, Skill]) -> Skill | None:
    """A skill by its id or its exact name."""
    return skills.get(name) or next((s for s in skills.values() if s.name == name), None)


# -- responses: the `openai` package's types, which check the data as they would OpenAI's answers ----


class ModelList(BaseModel):
    """GET /v1/models' body: the `openai` package has a type for the entries, not for the list."""

    object: Literal["list"]
    data: list[Model]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(stats: Stats) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=stats.prompt_tokens, completion_tokens=stats.new_tokens,
                           total_tokens=stats.prompt_tokens + stats.new_tokens)


def _finish_reason(stats: Stats) -> Any:
    return FINISH_REASONS.get(stats.stop_reason, "stop") if stats.stop_reason else "stop"


def completion(cid: str, model: str, text: str, stats: Stats, logprobs: dict[str, Any] | None = None) -> ChatCompletion:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
              "finish_reason": _finish_reason(stats)}
    return ChatCompletion.model_validate({"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                                          "choices": [choice], "usage": usage(stats)})


def chunk(cid: str, model: str, delta: dict[str, str] | None = None, finish: Stats | None = None,
          stats_usage: Stats | None = None, logprobs: dict[str, Any] | None = None) -> ChatCompletionChunk:
    """One SSE chunk: a text delta, the closing finish_reason, or (choices empty) the usage; `logprobs`:
    those of the tokens whose text it brings."""
    if stats_usage is not None:
        return ChatCompletionChunk(id=cid, object="chat.completion.chunk", created=int(time.time()), model=model,
                                   choices=[], usage=usage(stats_usage))
    choice = {"index": 0, "delta": delta or {}, "finish_reason": _finish_reason(finish) if finish is not None else None,
              **({"logprobs": logprobs} if logprobs is not None else {})}
    return ChatCompletionChunk.model_validate({"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                                               "model": model, "choices": [choice]})


def models_list(models: ModelList_, skills: Mapping[str, Skill]) -> ModelList:
    """Every model of the list, then one entry per skill of the default model: `<model>:<skill id>` (with the
    skill's name and description; any model of the list takes the same suffix).

    Each says its context length as vLLM does (`max_model_len`), so that clients, and this app on
    `--backend openai`, can trim long chats to fit; and whether it is loaded now (`loaded`: a request for one
    that isn't loads it first).
    """
    created = int(time.time())
    own = {"object": "model", "created": created, "owned_by": OWN_MODELS_OWNER}
    listing = models.listing()
    entries = [Model.model_validate({"id": info.name, **own, "max_model_len": info.context_window or 0, "loaded": info.loaded,
                                     "weights": info.weights, "source": info.source}) for info in listing]
    default = next((info for info in listing if info.name == models.default), None)
    for sid, skill in skills.items():
        entries.append(Model.model_validate({"id": f"{models.default}{SKILL_SEPARATOR}{sid}", **own,
                                             "max_model_len": default.context_window if default else 0,
                                             "loaded": default.loaded if default else False,
                                             "skill": skill.name, "description": skill.description}))
    return ModelList(object="list", data=entries)
