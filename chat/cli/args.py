"""Command-line flags shared by app.py and `python -m chat …`, and what they build.

One place defines the model and sampling flags, so the web app, the terminal chat, the
prompt renderer and the trainer accept the same words with the same meaning.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
from pathlib import Path
from typing import Any, Callable

from ..engine import Engine
from ..formats import FORMATS, choose_format
from ..instructions import default_instructions, read_instructions
from ..library.entries import LocalFlags, local_entries, server_entries
from ..shelf import Entry
from ..shelf import DefaultsKeeper, ModelShelf
from ..local import discovery
from ..local.loader import DTYPE_CHOICES, QUANTIZE_CHOICES, LoadOptions, load_model
from ..remote.engine import API_KEY_ENV, RemoteEngine
from ..remote.servers import list_models
from .progress import terminal_bar
from ..settings import SETTINGS, GenerationSettings
from ..skills import SkillBook
from ..skills_file import DEFAULT_SKILLS_PATH, load_skills
from ..store.store import open_store, user_owner


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", action="append", metavar="MODEL",
                       help="hub id (Qwen/Qwen2.5-7B-Instruct), local folder, .gguf file or adapter folder; repeatable: the "
                       "first is a new chat's model, every one is in the model list. Default: the embedded "
                       "SmolLM2-135M-Instruct (with --backend openai: the served model's name)")
    group.add_argument("--models-dir", metavar="DIR",
                       help="a folder of models to list too (transformers folders, .gguf files, adapters), read at start "
                       "and on Refresh. The Hugging Face cache and adapters trained here are always listed")
    group.add_argument("--max-loaded", type=int, metavar="N",
                       help="models loaded at once; loading one more unloads the least recently used (never one answering)")
    group.add_argument("--memory-budget", metavar="SIZE", type=parse_size,
                       help="memory the loaded models may take together, by their estimates (e.g. 8GB); loading past it "
                       "unloads the least recently used")
    group.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="auto",
                       help="weights: int8/int4 for the CPU (PyTorch's kernels), 8bit/4bit for GPUs (bitsandbytes), none: as loaded; "
                       "auto (default): int8 on a CPU, as loaded on a GPU")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="weight dtype (auto: bfloat16/float16 on GPU, float32 on CPU)")
    group.add_argument("--device-map", metavar="MAP", help="'auto' shards the model over all visible GPUs, offloading the rest to CPU")
    group.add_argument("--max-memory", metavar="LIMITS", help="with --device-map: per-device limits, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    group.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with the model (only for models you trust)")
    group.add_argument("--cache-dir", help="where hub downloads and converted GGUF models are kept (default: HF_HOME and the user cache)")
    group.add_argument("--format", choices=FORMATS, default="auto", help="prompt format: the tokenizer's chat template, or a plain transcript for base models")
    group.add_argument("--user-name", default="User", help="the user's name in transcript mode")
    group.add_argument("--bot-name", default="Assistant", help="the model's name in transcript mode")
    group.add_argument("--skills", metavar="PATH", help="skills file (default: the app's skills.yaml)")
    group.add_argument("--instructions", metavar="TEXT_OR_FILE", help="system instructions, as text or a file")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per sampling setting (`--temperature`, `--top-p`, …), from its declaration."""
    group = parser.add_argument_group("sampling defaults")
    for declared in SETTINGS:
        default = "unset" if declared.default is None else "%(default)s"
        group.add_argument(declared.flag(), type=declared.kind, default=declared.default,
                           help=f"{declared.help} (default {default})")


def parse_size(text: str) -> int:
    """'8GB', '512MiB', '1.5 GB' → bytes (argparse type)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"can't read {text!r} as a size; write e.g. 8GB or 512MiB")
    number, unit, binary = match.groups()
    power = "KMGT".find(unit.upper()) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def first_model(args: argparse.Namespace) -> str | None:
    return (args.model or [None])[0]


def load_options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        model=first_model(args), quantize=args.quantize, dtype=args.dtype, device_map=args.device_map,
        max_memory=args.max_memory, trust_remote_code=args.trust_remote_code, cache_dir=args.cache_dir,
    )


def local_flags(args: argparse.Namespace, given: bool = False) -> LocalFlags:
    """The flags for a local model of the list; `given`: one the flags named (--model, or the embedded one without
    any), to which --quantize and --trust-remote-code apply. (Code shipped with a model in the cache or a folder
    runs only when that model is named.)"""
    batching = getattr(args, "batching", False)
    return LocalFlags(quantize=args.quantize if given else "auto", dtype=args.dtype, device_map=args.device_map,
                      max_memory=args.max_memory, trust_remote_code=given and args.trust_remote_code, cache_dir=args.cache_dir,
                      prompt_format=args.format,
                      user_name=args.user_name, bot_name=args.bot_name, batching=batching,
                      answers=max(1, getattr(args, "concurrency", None) or (4 if batching else 1)),
                      context_window=getattr(args, "context_window", None))


def build_models(args: argparse.Namespace, say: Callable[[str], None] = print, keeper: DefaultsKeeper | None = None) -> ModelShelf:
    """The model list the flags ask for: each --model, the embedded model, adapters trained here, --models-dir and the
    Hugging Face cache; with --base-url, the server's models (with --backend openai, only those)."""
    remote = getattr(args, "backend", "local") == "openai"
    base_url = getattr(args, "base_url", None)
    if remote:
        RemoteEngine.check_flags(base_url, first_model(args))
    key = os.environ.get(API_KEY_ENV) or getattr(args, "api_key", None)

    def discover() -> list[Entry]:
        entries: list[Entry] = [] if remote else _local_entries(args)  # (the first is a new chat's model)
        if base_url:
            ids, problem = list_models(base_url.rstrip("/"), key)
            ids = list(dict.fromkeys([*(args.model or [] if remote else []), *ids]))
            entries += server_entries(base_url.rstrip("/"), key, ids, problem, getattr(args, "context_window", None),
                                      getattr(args, "standard_sampling", False))
        return entries

    default = first_model(args) if remote or args.model else None
    return ModelShelf(discover, default, getattr(args, "max_loaded", None), getattr(args, "memory_budget", None), keeper, say)


def _local_entries(args: argparse.Namespace) -> list[Entry]:
    gpu, bf16 = _gpu()
    cache = Path(args.cache_dir) if args.cache_dir else None
    given = [discovery.given_model(spec, hub_cache=cache) for spec in args.model or []]
    found = [discovery.embedded_model(), *discovery.trained_models()]
    if getattr(args, "models_dir", None):
        found += discovery.folder_models(Path(args.models_dir).expanduser())
    found += discovery.cache_models(cache)
    named = {id(model) for model in given or found[:1]}  # those --model named, else the embedded one
    entries = []
    for model in discovery.distinct([*given, *found]):
        entries += local_entries(model, local_flags(args, given=id(model) in named), gpu, bf16)
    return entries


def _gpu() -> tuple[bool, bool]:
    import torch  # (the local models load with it anyway)

    gpu = torch.cuda.is_available()
    return gpu, gpu and torch.cuda.is_bf16_supported()


def settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(**{declared.name: getattr(args, declared.name) for declared in SETTINGS})


def build_engine(args: argparse.Namespace, say: Callable[[str], None] = print) -> Engine:
    """The first model the flags ask for, loaded: a local transformers model, or an OpenAI-compatible server."""
    if getattr(args, "backend", "local") == "openai":
        return RemoteEngine.from_args(args, say)
    from ..local.engine import LocalEngine  # here: torch (seconds to import) only for the local backend

    loaded = load_model(load_options(args), say)
    say(f"Model: {loaded.name} on {loaded.device}")
    engine = LocalEngine(loaded, choose_format(loaded.tokenizer, args.format, args.user_name, args.bot_name),
                         batching=getattr(args, "batching", False), context_window=getattr(args, "context_window", None))
    if getattr(args, "batching", False) and engine.batcher is None:
        say("Batching: off (this model's cache is not plain attention); answers at once take turns")
    return engine


def starting_with(models: ModelShelf, args: argparse.Namespace, instructions: str,
                  settings: GenerationSettings) -> tuple[str, GenerationSettings]:
    """The instructions and settings a chat starts with: the flags', with the default model's own defaults where it
    has them (instructions given with --instructions win: they were asked for now)."""
    applied, settings = models.defaults(models.default).applied(instructions, settings)
    return (instructions if args.instructions is not None else applied), settings


def load_default(models: ModelShelf, say: Callable[[str], None] = print) -> Engine:
    """Loads the list's default model (a new chat's), with a bar on the terminal."""
    with terminal_bar(models.default) as bar:
        engine = models.engine(models.default, bar)
    say(f"Model: {engine.name} on {engine.device}")
    return engine


def build_skills(args: argparse.Namespace) -> SkillBook:
    return load_skills(args.skills or DEFAULT_SKILLS_PATH)


def build_instructions(args: argparse.Namespace, engine: Engine) -> str:
    given = read_instructions(args.instructions)
    return given if given is not None else default_instructions(engine.format)


def add_store_arguments(parser: argparse.ArgumentParser, owner: bool = False) -> None:
    """--db (and, for the terminal, --user: whose chats; on the page the login or the browser decides)."""
    group = parser.add_argument_group("saved conversations")
    group.add_argument("--db", metavar="PATH_OR_URL",
                       help="where conversations are kept: a SQLite file, or postgresql://USER:PASSWORD@HOST/DB for "
                       "several app instances; 'none' keeps them in memory only (default: chats.sqlite3 in the user "
                       "data folder)")
    if not owner:
        return
    group.add_argument("--user", metavar="NAME",
                       help="whose conversations these are. Terminal: default your login name. Page (without --auth): "
                       "every visitor is NAME, for a page only you use (default: each browser has its own). The "
                       "page's --auth users are the same owners: --user alice shares alice's chats")


def open_store_from_args(args: argparse.Namespace) -> Any:
    """The conversation store the flags ask for (None with --db none); raises StoreError, one line."""
    return open_store(getattr(args, "db", None))


def owner_from_args(args: argparse.Namespace) -> str:
    return user_owner(getattr(args, "user", None) or getpass.getuser())
