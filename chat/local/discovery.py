"""Models on this machine: the embedded one, `--model` flags, the Hugging Face cache, a `--models-dir`
folder and the adapters `python -m chat train` made here, each read from its files without loading it.

Nothing is copied or renamed: a cached hub model is listed by its repository id and loaded from its
snapshot folder. A folder that can't be read is listed with its problem (the file and what is wrong),
so the others stay usable. No torch here: listing takes milliseconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

from .embedded import EMBEDDED_DISTRIBUTION, converted_dir, find_embedded_gguf
from .loader import ADAPTER_CONFIG
from .memory import ModelShape, folder_shape, gguf_shape
from ..errors import ModelLoadError

log = logging.getLogger(__name__)

EMBEDDED_BASE = "SmolLM2-135M-Instruct"
TRAINED_LIST = "trained-models.txt"  # under the user data folder: one output folder of `python -m chat train` per line
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


@dataclass(frozen=True)
class LocalModel:
    """A model on disk (or a hub id), as the list shows it before it is loaded."""

    base: str  # its name in the list
    source: str  # embedded, --model, Hugging Face cache, --models-dir, trained here
    location: str | None  # what the loader gets (None: the embedded model)
    shown_location: str
    disk_bytes: int | None = None
    shape: ModelShape | None = None
    problem: str | None = None
    adapter_of: str | None = None  # an adapter: the base model it was trained on
    revision: str | None = None  # a cached hub snapshot's commit


def embedded_model() -> LocalModel:
    try:
        gguf = find_embedded_gguf()
    except ModelLoadError as error:
        return LocalModel(EMBEDDED_BASE, "embedded", None, EMBEDDED_DISTRIBUTION, problem=str(error))
    converted = converted_dir(gguf)
    try:
        shape = folder_shape(converted) if (converted / "config.json").exists() else gguf_shape(gguf)
    except ValueError as error:
        return LocalModel(EMBEDDED_BASE, "embedded", None, str(gguf), problem=str(error))
    return LocalModel(EMBEDDED_BASE, "embedded", None, str(gguf), gguf.stat().st_size, shape)


def given_model(spec: str, source: str = "--model", hub_cache: Path | None = None) -> LocalModel:
    """A `--model` value: a folder, a .gguf file, or a hub id (read from the cache where it is there)."""
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" or path.exists():
        return path_model(path, source)
    snapshot = cached_snapshot(spec, hub_cache)
    if snapshot is not None:
        return _with_files(LocalModel(spec, source, spec, spec), snapshot)
    return LocalModel(spec, source, spec, f"{spec} (Hugging Face hub)")


def path_model(path: Path, source: str, name: str | None = None) -> LocalModel:
    """A folder (model or adapter) or a .gguf file; its problem named where it can't load."""
    shown = str(path)
    name = name or (path.stem if path.suffix == ".gguf" else path.name)
    if path.suffix == ".gguf":
        if not path.is_file():
            return LocalModel(name, source, str(path), shown, problem=f"{path}: file not found")
        try:
            return LocalModel(name, source, str(path), shown, path.stat().st_size, gguf_shape(path))
        except ValueError as error:
            return LocalModel(name, source, str(path), shown, problem=str(error))
    if not path.is_dir():
        return LocalModel(name, source, str(path), shown, problem=f"{path}: not found (expected a model folder or a .gguf file)")
    if (path / ADAPTER_CONFIG).is_file():
        return _adapter(path, name, source)
    return _with_files(LocalModel(name, source, str(path), shown), path)


def _with_files(model: LocalModel, folder: Path) -> LocalModel:
    from dataclasses import replace

    if not (folder / "config.json").exists():
        return replace(model, problem=f"{folder}: no config.json (not a transformers model folder)")
    if not any(folder.glob(pattern) for pattern in WEIGHT_FILES):
        return replace(model, problem=f"{folder}: no weights (*.safetensors or *.bin); an interrupted download?")
    try:
        shape = folder_shape(folder)
    except ValueError as error:
        return replace(model, problem=str(error))
    return replace(model, disk_bytes=_size(folder), shape=shape)


def _adapter(folder: Path, name: str, source: str) -> LocalModel:
    config_path = folder / ADAPTER_CONFIG
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as error:
        return LocalModel(name, source, str(folder), str(folder), problem=f"{config_path}: line {error.lineno}: {error.msg}")
    except OSError as error:
        return LocalModel(name, source, str(folder), str(folder), problem=f"{config_path}: {error.strerror}")
    if not base:
        return LocalModel(name, source, str(folder), str(folder), problem=f"{config_path}: does not name its base model")
    base_model = embedded_model() if base == "embedded" else given_model(base, source)
    shown_base = EMBEDDED_BASE if base == "embedded" else base
    return LocalModel(name, source, str(folder), str(folder), _size(folder), base_model.shape, base_model.problem, shown_base)


def cache_models(hub_cache: Path | None = None) -> list[LocalModel]:
    """The causal language models in the Hugging Face cache (`scan_cache_dir`), newest snapshot each."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache)
    except CacheNotFound:
        return []
    except (OSError, ValueError) as error:
        log.warning("the Hugging Face cache can't be read: %s", error)
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        if not _is_language_model(revision.snapshot_path):
            continue
        model = _with_files(LocalModel(repo.repo_id, "Hugging Face cache", str(revision.snapshot_path), repo.repo_id,
                                       revision=revision.commit_hash), revision.snapshot_path)
        found.append(model if model.problem else _sized(model, repo.size_on_disk))
    return found


def cached_snapshot(repo_id: str, hub_cache: Path | None = None) -> Path | None:
    """The newest snapshot folder of `repo_id` in the Hugging Face cache, if it is there."""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(hub_cache or HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    folders = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return folders[-1].parent if folders else None


def folder_models(folder: Path) -> list[LocalModel]:
    """Each model in `folder`: transformers folders, adapters and .gguf files (one level down)."""
    if not folder.is_dir():
        return [LocalModel(folder.name, "--models-dir", str(folder), str(folder), problem=f"--models-dir {folder}: not a folder")]
    found = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith("."):
            continue
        if child.suffix == ".gguf" or (child / "config.json").exists() or (child / ADAPTER_CONFIG).exists():
            found.append(path_model(child, "--models-dir"))
    return found


def trained_models() -> list[LocalModel]:
    """The adapters and models `python -m chat train` saved on this machine (those still there)."""
    listed = _trained_list()
    try:
        lines = listed.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    folders = [Path(line) for line in dict.fromkeys(line.strip() for line in lines) if line]
    return [path_model(folder, "trained here") for folder in folders if folder.is_dir()]


def remember_trained(folder: Path) -> None:
    """Adds a training output to the list the app reads at start (and on Refresh)."""
    listed = _trained_list()
    listed.parent.mkdir(parents=True, exist_ok=True)
    with listed.open("a", encoding="utf-8") as handle:
        handle.write(f"{folder.resolve()}\n")


def _trained_list() -> Path:
    return Path(user_data_dir("chat-workbench", appauthor=False)) / TRAINED_LIST


def distinct(models: list[LocalModel]) -> list[LocalModel]:
    """`models` without repeats (a folder given with --model and found in --models-dir too: listed once), each
    with a name of its own (two folders called `model`: `a/model` and `b/model`)."""
    from dataclasses import replace

    seen: set[str] = set()
    names: set[str] = set()
    kept = []
    for model in models:
        where = str(Path(model.location).resolve()) if model.location and Path(model.location).exists() else str(model.location)
        if where in seen:
            continue
        seen.add(where)
        if model.base in names and model.location:
            model = replace(model, base=f"{Path(model.location).parent.name}/{model.base}")
        names.add(model.base)
        kept.append(model)
    return kept


def _is_language_model(snapshot: Path) -> bool:
    try:
        config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (snapshot / "config.json").exists()  # unreadable: listed, with its problem
    architectures = config.get("architectures") or []
    return any(name.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for name in architectures)


def _size(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def _sized(model: LocalModel, size: int) -> LocalModel:
    from dataclasses import replace

    return replace(model, disk_bytes=size)
