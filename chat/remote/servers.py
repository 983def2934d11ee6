"""Which server is behind --base-url, and what it says about itself.

Servers that speak the OpenAI API differ where it matters to a chat: where they tell their context
window (each in its own place, some not at all) and which sampling fields they read beyond the
standard ones. `probe` asks once at start-up, with short timeouts, and never raises: a server
that is down is a warning, and the app starts anyway.

    vLLM                 GET /v1/models → data[].max_model_len
    llama.cpp (server)   GET /props → default_generation_settings.n_ctx (per slot)
    TGI                  GET /info → max_total_tokens
    Ollama               POST /api/show → num_ctx in its parameters, else Ollama's default
    llama-cpp-python     says nothing; its --n_ctx defaults to 2,048
    this app             GET /v1/models → data[].max_model_len (as vLLM)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

PROBE_TIMEOUT_S = 3.0  # a server that takes longer to list its models is reported, not waited for
LLAMA_CPP_PYTHON_DEFAULT_N_CTX = 2048  # `python -m llama_cpp.server` without --n_ctx
OLLAMA_DEFAULT_NUM_CTX = 4096  # Ollama's context when neither the model nor OLLAMA_CONTEXT_LENGTH sets one
OWN_MODELS_OWNER = "chat-workbench"  # how this app's /v1/models marks its entries

# Sampling fields a server reads under another name than this app's (beyond the OpenAI standard).
# Both names are sent: a server ignores the one it does not know.
FIELD_ALIASES: dict[str, dict[str, str]] = {
    "llama.cpp": {"repetition_penalty": "repeat_penalty"},
    "llama-cpp-python": {"repetition_penalty": "repeat_penalty"},
}


@dataclass(frozen=True)
class ServerInfo:
    kind: str  # vllm, llama.cpp, llama-cpp-python, tgi, ollama, chat-workbench; "unknown" if it did not say
    context_window: int | None = None  # tokens, when the server said (or has a known default)
    window_source: str = ""  # where `context_window` comes from, in words
    problem: str | None = None  # why it could not be asked (then nothing else is known)

    @property
    def reachable(self) -> bool:
        return self.problem is None

    def aliases(self) -> dict[str, str]:
        return FIELD_ALIASES.get(self.kind, {})


UNKNOWN = ServerInfo("unknown")


def probe(base_url: str, model: str, api_key: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> ServerInfo:
    """Asks the server at `base_url` (ending in /v1) what it is and how long its context is."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    root = re.sub(r"/v1/?$", "", base_url)
    try:
        with httpx.Client(timeout=timeout_s, headers=headers) as http:
            response = http.get(f"{base_url}/models")
            if response.status_code in (401, 403):
                return ServerInfo("unknown", problem=f"it refused the API key (HTTP {response.status_code})")
            entry = _model_entry(_json(response), model)
            return _identify(http, root, model, entry)
    except httpx.HTTPError as error:
        return ServerInfo("unknown", problem=_reason(error))


def list_models(base_url: str, api_key: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[list[str], str | None]:
    """The model ids the server at `base_url` lists (`GET /v1/models`), and why it couldn't be asked (None: it
    answered). Skill entries of this app's own list (`model:skill`) are left out: skills are picked apart."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout_s, headers=headers) as http:
            response = http.get(f"{base_url}/models")
    except httpx.HTTPError as error:
        return [], _reason(error)
    if response.status_code >= 400:
        return [], f"HTTP {response.status_code} from {base_url}/models"
    entries = [entry for entry in _json(response).get("data") or [] if isinstance(entry, dict) and entry.get("id")]
    return [str(entry["id"]) for entry in entries if not entry.get("skill")], None


def _identify(http: httpx.Client, root: str, model: str, entry: dict[str, Any]) -> ServerInfo:
    owner = str(entry.get("owned_by", ""))
    if isinstance(entry.get("max_model_len"), int):
        kind = "chat-workbench" if owner == OWN_MODELS_OWNER else "vllm"
        return ServerInfo(kind, entry["max_model_len"], "the server's /v1/models")
    if owner == "me":  # llama-cpp-python's server lists every model as owned by "me"
        return ServerInfo("llama-cpp-python", LLAMA_CPP_PYTHON_DEFAULT_N_CTX,
                          "assumed: llama-cpp-python's default --n_ctx, which it does not report")
    for ask in (_llama_cpp_props, _tgi_info, _ollama_show):
        found = ask(http, root, model)
        if found is not None:
            return found
    return UNKNOWN


def _llama_cpp_props(http: httpx.Client, root: str, model: str) -> ServerInfo | None:
    props = _json(_get(http, f"{root}/props"))
    settings = props.get("default_generation_settings")
    n_ctx = (settings.get("n_ctx") if isinstance(settings, dict) else None) or props.get("n_ctx")
    return ServerInfo("llama.cpp", n_ctx, "the server's /props (per slot)") if isinstance(n_ctx, int) else None


def _tgi_info(http: httpx.Client, root: str, model: str) -> ServerInfo | None:
    info = _json(_get(http, f"{root}/info"))
    total = info.get("max_total_tokens")
    return ServerInfo("tgi", total, "the server's /info") if isinstance(total, int) and "model_id" in info else None


def _ollama_show(http: httpx.Client, root: str, model: str) -> ServerInfo | None:
    if "version" not in _json(_get(http, f"{root}/api/version")):
        return None
    try:
        shown = _json(http.post(f"{root}/api/show", json={"model": model}))
    except httpx.HTTPError:
        shown = {}
    match = re.search(r"^num_ctx\s+(\d+)", str(shown.get("parameters", "")), re.MULTILINE)
    if match:
        return ServerInfo("ollama", int(match.group(1)), "the model's num_ctx (Ollama's /api/show)")
    trained = next((v for k, v in (shown.get("model_info") or {}).items() if k.endswith(".context_length")), None)
    window = min(OLLAMA_DEFAULT_NUM_CTX, trained) if isinstance(trained, int) else OLLAMA_DEFAULT_NUM_CTX
    return ServerInfo("ollama", window, "assumed: Ollama's default num_ctx (OLLAMA_CONTEXT_LENGTH changes it)")


def _get(http: httpx.Client, url: str) -> httpx.Response | None:
    try:
        return http.get(url)
    except httpx.HTTPError:
        return None


def _json(response: httpx.Response | None) -> dict[str, Any]:
    if response is None or response.status_code != 200:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _model_entry(models: dict[str, Any], model: str) -> dict[str, Any]:
    entries = [e for e in models.get("data") or () if isinstance(e, dict)]
    return next((e for e in entries if e.get("id") == model), entries[0] if entries else {})


def _reason(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.ConnectError):
        return "connection refused" if "refused" in str(error).lower() else f"can't connect: {error}"
    if isinstance(error, httpx.TimeoutException):
        return "no answer within the time allowed"
    return f"{type(error).__name__}: {error}"
