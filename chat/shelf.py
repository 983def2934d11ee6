"""The model list of a running app (a `chat.models.ModelList`): every entry, the engines loaded now, and the
rules for loading and unloading them.

- A model loads on first use, once: two tabs asking for it at the same time wait for the same load. Loading
  one model never holds up another's answers (each load has its own lock; the list's lock is never held
  while a model loads).
- Before it loads, its estimate (chat/local/memory.py, made by chat/library/entries.py) is checked against what is free (RAM, or the GPU's
  memory) and against the limits (`--max-loaded`, `--memory-budget`). Under a limit, the least recently used
  model that is not answering is unloaded to make room; otherwise a model that won't fit is refused, with
  what to unload or which flag to change, and nothing else changes.
- Unload refuses a model that is answering; the chats that use it load it again at their next answer.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Collection, Iterable, Protocol, Sequence

from dataclasses import dataclass

from .engine import Engine
from .errors import ChatError, ModelLoadError
from .machine import available_ram, give_back_freed_memory, gpu_free
from .models import ModelDefaults, ModelInfo, Progress, size_words

log = logging.getLogger(__name__)


Say = Callable[[str], None]
Build = Callable[[Say, "Progress | None", ModelDefaults], Engine]
Reformat = Callable[[Engine, ModelDefaults], None]  # a loaded engine takes its model's (new) default prompt format


@dataclass(frozen=True)
class Entry:
    """One model of the list: what it is (`info`: its fields that don't change while it loads) and how to make its
    engine (chat/library/entries.py makes them for local models and servers)."""

    info: ModelInfo
    build: Build
    local: bool = True  # it takes this machine's memory (checked before it loads)
    reloadable: bool = True  # False: an engine made elsewhere, which can't be made again once unloaded
    reformat: Reformat | None = None  # None: its prompt format is the server's, or was made elsewhere


def loaded_entry(engine: Engine, source: str = "given") -> Entry:
    """An entry for an engine made elsewhere (tests, one-engine programs): loaded already."""
    info = ModelInfo(engine.name, engine.name, source, engine.device, getattr(engine, "weights", "?"),
                     context_window=engine.context_window)
    return Entry(info, lambda say, progress, defaults: engine, local=hasattr(engine, "model"), reloadable=False)


def _begin_close(engine: Engine) -> bool:
    """Unload's first step (see `LocalEngine.begin_close`); an engine without one (a server's) just goes."""
    begin = getattr(engine, "begin_close", None)
    return begin() if begin is not None else True


def _cancel_close(engine: Engine) -> None:
    cancel = getattr(engine, "cancel_close", None)
    if cancel is not None:
        cancel()


class DefaultsKeeper(Protocol):
    """Where per-model defaults are kept (the store: `chat.store.store.Store`)."""

    def model_defaults(self, model: str) -> ModelDefaults | None: ...

    def save_model_defaults(self, model: str, defaults: ModelDefaults) -> None: ...


class InMemoryDefaults:
    """Per-model defaults without a store (`--db none`): kept until the app stops."""

    def __init__(self) -> None:
        self._kept: dict[str, ModelDefaults] = {}

    def model_defaults(self, model: str) -> ModelDefaults | None:
        return self._kept.get(model)

    def save_model_defaults(self, model: str, defaults: ModelDefaults) -> None:
        self._kept[model] = defaults


class ModelShelf:
    """The models of one app: `discover` lists them (again on `refresh`); `engine` loads on demand."""

    def __init__(self, discover: Callable[[], Iterable[Entry]], default: str | None = None, max_loaded: int | None = None,
                 memory_budget: int | None = None, keeper: DefaultsKeeper | None = None, say: Say = print):
        if max_loaded is not None and max_loaded < 1:
            raise ChatError("--max-loaded must be at least 1")
        self._discover, self._say = discover, say
        self.max_loaded, self.memory_budget = max_loaded, memory_budget
        self.keeper: DefaultsKeeper = keeper or InMemoryDefaults()
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._loaded: OrderedDict[str, Engine] = OrderedDict()  # least recently used first
        self._loading: dict[str, Entry] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._read(discover())
        if not self._entries:
            raise ModelLoadError("no models: give --model, or install the embedded one (scripts/install)")
        found = self.find(default) if default else next(iter(self._entries))
        if found is None:
            raise ModelLoadError(f"--model {default}: not in the model list")
        self.default: str = found

    @classmethod
    def of(cls, *engines: Engine, **kwargs: Any) -> "ModelShelf":
        """A list of engines made elsewhere (tests, one-engine programs), loaded already; the first is the default."""
        entries = [loaded_entry(engine) for engine in engines]
        shelf = cls(lambda: entries, **kwargs)
        for engine in engines:
            shelf._loaded[engine.name] = engine
        return shelf

    # -- what is known ---------------------------------------------------------------------------

    def listing(self) -> list[ModelInfo]:
        with self._lock:
            return [self._current(entry) for entry in self._entries.values()]

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def find(self, name: str | None) -> str | None:
        if not name:
            return None
        with self._lock:
            if name in self._entries:
                return name
            # The model's own name (or where it is: the --model given) means its default variant (listed first);
            # a loaded variant wins.
            variants = [key for key, entry in self._entries.items() if name in (entry.info.base, entry.info.location)]
            loaded = [key for key in variants if key in self._loaded]
            return (loaded or variants)[0] if variants else None

    def info(self, name: str) -> ModelInfo:
        with self._lock:
            return self._current(self._entry(name))

    def refresh(self) -> None:
        """Reads the folders and servers again; loaded models stay, even if their files went away."""
        found = list(self._discover())
        with self._lock:
            kept = {name: self._entries[name] for name in [*self._loaded, *self._loading] if name in self._entries}
            self._entries = {}
            self._read(found)
            for name, entry in kept.items():
                self._entries.setdefault(name, entry)

    # -- loading and unloading -------------------------------------------------------------------

    def loaded_engine(self, name: str) -> Engine | None:
        """The model's engine if it is loaded (counted as a use: the least recently used is unloaded first)."""
        with self._lock:
            return self._use(self.find(name) or name)

    def engine(self, name: str, progress: Progress | None = None, keep: Collection[str] = ()) -> Engine:
        """(`keep`: models not to unload to make room: the others of a set that answers at once.)"""
        key = self._known(name)
        with self._lock:
            engine = self._use(key)
            if engine is not None:
                return engine
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # a second tab asking meanwhile waits here, then finds it loaded
            with self._lock:
                engine = self._use(key)
                if engine is not None:
                    return engine
                entry = self._entries.get(key)
                if entry is None:
                    raise ModelLoadError(f"{key} is no longer in the list (Refresh read the folders again)")
                if entry.info.problem:
                    raise ModelLoadError(f"{key} can't load: {entry.info.problem}")
                making_room = self._make_room(entry, keep)
                self._loading[key] = entry
            self._let_go(making_room)  # (outside the lock: letting a model go may wait for a warm-up's last step)
            try:
                engine = entry.build(self._say, progress, self.defaults(key))
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._loaded[key] = engine
                self._entries.setdefault(key, entry)  # (a Refresh meanwhile may have dropped it: it is loaded)
            log.info("loaded %s", key)
            return engine

    def unload(self, name: str) -> None:
        key = self._known(name)
        with self._lock:
            engine = self._loaded.get(key)
            if engine is None:
                return
            if not self._entries[key].reloadable:
                raise ChatError(f"{key} was given to this app loaded: it could not be loaded again")
            if not _begin_close(engine):
                raise ChatError(f"{key} is answering now: it can be unloaded when its answers end (Stop ends them)")
            del self._loaded[key]
        self._let_go([(key, engine)])

    def _let_go(self, closing: list[tuple[str, Engine]]) -> None:
        """Unload's second step, outside the list's lock: the engines' memory goes, and back to the system."""
        for key, engine in closing:
            finish = getattr(engine, "finish_close", None)
            if finish is not None:
                finish()
            log.info("unloaded %s", key)
        if closing:
            give_back_freed_memory()

    def _use(self, key: str) -> Engine | None:
        engine = self._loaded.get(key)
        if engine is not None:
            self._loaded.move_to_end(key)
        return engine

    def engines(self, names: Sequence[str], progress: Progress | None = None) -> dict[str, Engine]:
        keys = list(dict.fromkeys(self._known(name) for name in names))
        with self._lock:
            problem = self._together_problem(keys)
        if problem is not None:
            raise ModelLoadError(problem)
        return {key: self.engine(key, progress, keep=keys) for key in keys}

    def _together_problem(self, keys: list[str]) -> str | None:
        """Why `keys` can't be loaded at once (None: they can): too many for --max-loaded, their estimates together over
        --memory-budget, or more than the memory free once the idle models outside the set were unloaded."""
        if self.max_loaded is not None and len(keys) > self.max_loaded:
            return (f"comparing {len(keys)} models needs them loaded at once, and --max-loaded is {self.max_loaded}: "
                    "compare fewer models, or raise --max-loaded")
        others = [key for key in self._loaded if key not in keys]
        busy = [key for key in others if getattr(self._loaded[key], "answering", 0) or not self._entries[key].reloadable]
        estimates = {key: self._entries[key].info.estimate for key in keys if self._entries[key].local}
        together = sum(e.total for e in estimates.values() if e is not None)
        if self.memory_budget is not None:
            kept = sum(e.total for key in busy if (e := self._entries[key].info.estimate) is not None)
            if together + kept > self.memory_budget:
                return self._together_refusal(keys, estimates, f"--memory-budget {size_words(self.memory_budget)}", busy, others)
        new = [e for key, e in estimates.items() if e is not None and key not in self._loaded]
        wheres = {e.where for e in new}
        for where in wheres:
            free = self._free(where)
            limited = self.max_loaded is not None or self.memory_budget is not None
            freed = sum(self._in_use(self._loaded[key]) or 0 for key in others if key not in busy) if limited else 0
            if free is not None and sum(e.while_loading for e in new if e.where == where) > free + freed:
                return self._together_refusal(keys, estimates, f"{size_words(free)} free in {where}", others, others)
        return None

    def _together_refusal(self, keys: list[str], estimates: dict[str, Any], limit: str, unload: list[str],
                          others: list[str]) -> str:
        each = "; ".join(f"{key} ~{size_words(e.total) if e is not None else '?'}" for key, e in
                         ((key, estimates.get(key)) for key in keys))
        total = sum(e.total for e in estimates.values() if e is not None)
        advice = [f"unload {', '.join(unload)}" if unload else "", "compare fewer models, or smaller variants of them"]
        return (f"these {len(keys)} models won't fit in memory together ({each}: ~{size_words(total)} at once), with "
                f"{limit}. Nothing ran. Try: " + "; ".join(a for a in advice if a) + ".")

    def _make_room(self, entry: Entry, keep: Collection[str] = ()) -> list[tuple[str, Engine]]:
        """Under a limit, takes the least recently used idle models out of the list until `entry` fits, and returns
        them (their memory is let go outside the lock); refuses, changing nothing, when it would not fit even then,
        or when it doesn't fit and no limit allows unloading."""
        problem = self._over(entry)
        if problem is None:
            return []
        limited = self.max_loaded is not None or self.memory_budget is not None
        idle = [key for key, engine in self._loaded.items()
                if self._entries[key].reloadable and not getattr(engine, "answering", 0) and key not in keep]
        victims = self._victims(entry, idle) if limited else None
        if victims is None:
            raise ModelLoadError(self._refusal(entry, problem))
        closing: list[tuple[str, Engine]] = []
        for key in victims:  # each closes at once or not at all; one that began an answer meanwhile: none close
            if not _begin_close(self._loaded[key]):
                for _, engine in closing:
                    _cancel_close(engine)
                raise ModelLoadError(self._refusal(entry, problem))
            closing.append((key, self._loaded[key]))
        for key, _ in closing:
            self._say(f"Unloading {key} to make room for {entry.info.name}")
            del self._loaded[key]
        return closing

    def _victims(self, entry: Entry, idle: list[str]) -> list[str] | None:
        """The fewest idle models, least recently used first, whose unloading lets `entry` fit (None: none do)."""
        for count in range(1, len(idle) + 1):
            if self._over(entry, without=tuple(idle[:count])) is None:
                return idle[:count]
        return None

    def _over(self, entry: Entry, without: tuple[str, ...] = ()) -> str | None:
        """Which limit loading `entry` now would pass (None: it fits), were the models `without` unloaded first."""
        if self.max_loaded is not None and len(self._loaded) - len(without) + len(self._loading) >= self.max_loaded:
            return "count"
        need = entry.info.estimate
        if need is None or not entry.local:
            return None
        if self.memory_budget is not None and self._budgeted(without) + need.total > self.memory_budget:
            return "budget"
        free = self._free(need.where)
        freed = sum(self._in_use(self._loaded[key]) or 0 for key in without)
        loading = sum(e.info.estimate.while_loading for e in self._loading.values() if e.info.estimate is not None)
        if free is not None and need.while_loading > free + freed - loading:
            return "free"
        return None

    def _budgeted(self, without: tuple[str, ...] = ()) -> int:
        """What the loaded and loading models count against --memory-budget: their estimates."""
        counted = [self._entries[key].info.estimate for key in self._loaded if key in self._entries and key not in without]
        counted += [entry.info.estimate for entry in self._loading.values()]
        return sum(estimate.total for estimate in counted if estimate is not None)

    @staticmethod
    def _free(where: str) -> int | None:
        if where == "RAM":
            return available_ram()
        gpus = gpu_free()
        if where in gpus:
            return gpus[where][0]
        return sum(free for free, _ in gpus.values()) if gpus else None

    def _refusal(self, entry: Entry, problem: str) -> str:
        info, need = entry.info, entry.info.estimate
        busy = [key for key, engine in self._loaded.items() if getattr(engine, "answering", 0)]
        loaded = ", ".join(f"{key} ({size_words(self._in_use(engine))})" for key, engine in self._loaded.items())
        smaller = [e.info.name for e in self._entries.values() if e.info.base == info.base and e.info.estimate and need
                   and e.info.estimate.total < need.total]
        if problem == "count":
            head = f"{info.name} can't load: --max-loaded {self.max_loaded} models are loaded"
            if busy:
                head += f" and answering ({', '.join(busy)}): wait for their answers"
            return f"{head}; unload one ({loaded}) or raise --max-loaded"
        assert need is not None
        head = f"{info.name} won't fit: it needs {need.words()}"
        if problem == "budget":
            head += (f", and --memory-budget {size_words(self.memory_budget)} has "
                     f"{size_words(max(0, (self.memory_budget or 0) - self._budgeted()))} left")
        else:
            head += f", and {size_words(self._free(need.where))} is free"
        advice = [f"unload {loaded}" if loaded else "", f"pick a smaller variant ({', '.join(smaller)})" if smaller else "",
                  "lower --concurrency or --context-window (less KV cache)",
                  "raise --memory-budget" if problem == "budget" else ""]
        return f"{head}. Try: " + "; ".join(a for a in advice if a) + "."

    # -- per-model defaults ------------------------------------------------------------------------

    def defaults(self, name: str) -> ModelDefaults:
        key = self.find(name) or name
        try:
            return self.keeper.model_defaults(key) or ModelDefaults()
        except ChatError as error:  # the database went away: the model answers with the chat's own settings
            log.warning("model defaults of %s can't be read: %s", key, error)
            return ModelDefaults()

    def save_defaults(self, name: str, defaults: ModelDefaults) -> None:
        """Keeps `defaults` for the model; a loaded one takes its prompt format at once. Raises `ChatError`, saving
        nothing, for a format the loaded model can't do."""
        key = self._known(name)
        engine, entry = self.loaded_engine(key), self._entries[key]
        if engine is not None and entry.reformat is not None:
            entry.reformat(engine, defaults)
        self.keeper.save_model_defaults(key, defaults)

    # -- internals ---------------------------------------------------------------------------------

    def _read(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.info.name in self._entries:  # the same model given twice (--model and the cache): the first stays
                continue
            self._entries[entry.info.name] = entry

    def _known(self, name: str) -> str:
        key = self.find(name)
        if key is None:
            with self._lock:
                known = ", ".join(self._entries)
            raise ModelLoadError(f"no model called {name!r}; the list has: {known}")
        return key

    def _entry(self, name: str) -> Entry:
        return self._entries[self._known(name)]

    def _current(self, entry: Entry) -> ModelInfo:
        from dataclasses import replace

        engine = self._loaded.get(entry.info.name)
        if engine is None:
            return replace(entry.info, loaded=False, in_use=None, answering=0)
        return replace(entry.info, loaded=True, in_use=self._in_use(engine), answering=int(getattr(engine, "answering", 0)))

    @staticmethod
    def _in_use(engine: Engine) -> int | None:
        measure = getattr(engine, "memory_in_use", None)
        return measure() if measure is not None else None
