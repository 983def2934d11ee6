"""`python -m chat [talk|render|train] …`: the terminal side of the workbench.

Errors from the `chat` package end as one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .cli.args import (add_model_arguments, add_sampling_arguments, add_store_arguments, build_instructions, build_models,
                       build_skills, load_default, open_store_from_args, settings_from_args, starting_with)
from .cli.talk import add_talk_arguments, run_talk
from .errors import ChatError
from .files import load_conversation
from .remote.engine import add_backend_arguments
from .session import ChatSession
from .training.train import add_train_arguments, run_train  # (torch, transformers and peft load when training starts)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "talk")  # `python -m chat` alone starts a terminal chat
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except ChatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def render_command(args: argparse.Namespace) -> int:
    """Prints the exact prompt the model would receive; its token count goes to stderr."""
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731  (stdout holds the prompt alone)
    models = build_models(args, say=say, keeper=open_store_from_args(args))  # (the store keeps each model's defaults)
    engine = load_default(models, say=say)
    instructions, settings = starting_with(models, args, build_instructions(args, engine), settings_from_args(args))
    session = ChatSession(engine, build_skills(args), instructions, settings, models=models)
    if args.history:
        session.load_messages(load_conversation(args.history), args.history)
        if args.instructions is not None:
            session.instructions = build_instructions(args, engine)
    fitted = session.preview(args.message, args.skill)
    sys.stdout.write(fitted.prompt.text)
    sys.stdout.flush()
    print(f"\n{len(fitted.prompt.ids)} tokens (context {engine.context_window})", file=sys.stderr)
    if fitted.notice:
        print(fitted.notice, file=sys.stderr)
    return 0


def talk_command(args: argparse.Namespace) -> int:
    return run_talk(args)


def train_command(args: argparse.Namespace) -> int:
    return run_train(args)


COMMANDS = {"talk": talk_command, "render": render_command, "train": train_command}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chat", description="Chat with a local language model in the terminal.")
    commands = parser.add_subparsers(dest="command", metavar="{talk,render,train}")

    talk = commands.add_parser("talk", help="chat in the terminal (the default)")
    add_model_arguments(talk)
    add_backend_arguments(talk)
    add_sampling_arguments(talk)
    add_store_arguments(talk, owner=True)
    add_talk_arguments(talk)
    talk.set_defaults(run=talk_command)

    render = commands.add_parser("render", help="print the exact prompt the model would receive")
    render.add_argument("--message", required=True, help="the new user message")
    render.add_argument("--skill", help="skill name (default: the first skill, Chat)")
    render.add_argument("--history", metavar="FILE.json", help="earlier conversation in the messages format")
    add_model_arguments(render)
    add_backend_arguments(render)
    add_sampling_arguments(render)
    add_store_arguments(render)  # (--db: where the models' defaults are kept)
    render.set_defaults(run=render_command)

    train = commands.add_parser("train", help="teach the model new instructions from a text file")
    add_train_arguments(train)
    train.set_defaults(run=train_command)
    return parser


if __name__ == "__main__":
    sys.exit(main())
