"""Command-line flags shared by app.py and `python -m chat …`, and what they build.

One place defines the model and sampling flags, so the web app, the terminal chat, the
prompt renderer and the trainer accept the same words with the same meaning.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any, Callable

from ..engine import Engine
from ..formats import FORMATS, choose_format
from ..instructions import default_instructions, read_instructions
from ..local.loader import DTYPE_CHOICES, QUANTIZE_CHOICES, LoadOptions, load_model
from ..remote.engine import RemoteEngine
from ..settings import SETTINGS, GenerationSettings
from ..skills import SkillBook
from ..skills_file import DEFAULT_SKILLS_PATH, load_skills
from ..store.store import open_store, user_owner


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="hub id (Qwen/Qwen2.5-7B-Instruct), local folder or .gguf file; "
                       "default: the embedded SmolLM2-135M-Instruct (with --backend openai: the served model's name)")
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


def load_options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        model=args.model, quantize=args.quantize, dtype=args.dtype, device_map=args.device_map,
        max_memory=args.max_memory, trust_remote_code=args.trust_remote_code, cache_dir=args.cache_dir,
    )


def settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(**{declared.name: getattr(args, declared.name) for declared in SETTINGS})


def build_engine(args: argparse.Namespace, say: Callable[[str], None] = print) -> Engine:
    """The backend the flags ask for: a local transformers model, or an OpenAI-compatible server."""
    if getattr(args, "backend", "local") == "openai":
        return RemoteEngine.from_args(args, say)
    from ..local.engine import LocalEngine  # here: torch (seconds to import) only for the local backend

    loaded = load_model(load_options(args), say)
    say(f"Model: {loaded.name} on {loaded.device}")
    engine = LocalEngine(loaded, choose_format(loaded.tokenizer, args.format, args.user_name, args.bot_name),
                         batching=getattr(args, "batching", False))
    if getattr(args, "batching", False) and engine.batcher is None:
        say("Batching: off (this model's cache is not plain attention); answers at once take turns")
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
