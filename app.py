"""Start the chat workbench in the browser.

    python app.py                                  # the embedded SmolLM2, http://127.0.0.1:7860
    python app.py --model Qwen/Qwen2.5-7B-Instruct --quantize 4bit
    python app.py --share --auth alice:secret      # a public demo link, password protected

Parses flags, builds the engine and the page, launches; nothing happens at import.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from chat.cli.args import (add_model_arguments, add_sampling_arguments, add_store_arguments, build_instructions, build_models,
                           build_skills, load_default, open_store_from_args, settings_from_args, starting_with)
from chat.errors import ChatError
from chat.remote.engine import add_backend_arguments
from chat.skill_library import SkillLibrary

DEFAULT_PORT = 7860
API_KEY_ENV = "CHAT_API_KEY"
SHARED_CONCURRENCY = 4  # answers at once when they share each step: 4 made ~1.9x the tokens/s of 1 (README, Performance)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A local LLM chat workbench in your browser.")
    add_model_arguments(parser)
    add_backend_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 = every interface (default %(default)s)")
    server.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT)), help="port (default %(default)s)")
    server.add_argument("--share", action="store_true", help="create a public gradio.live link (needs internet)")
    server.add_argument("--auth", action="append", metavar="USER:PASS", help="require this login for the page and the API (repeatable)")
    server.add_argument("--auth-file", metavar="FILE", help="a file of USER:PASS lines, instead of --auth on the command line")
    server.add_argument("--admin", action="append", metavar="USER", default=[],
                        help="an --auth user whose leaderboard counts everyone's votes, not only their own (repeatable)")
    server.add_argument("--concurrency", type=int, default=None,
                        help="answers generated at once; more wait in the queue (default 4 with batching or a remote backend, else 1)")
    server.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                        help="answers generated at once share each model step, instead of taking turns or competing "
                             "for the processor (local models; default on)")
    server.add_argument("--queue-size", type=int, default=20, help="waiting requests before new ones are told the app is busy (default %(default)s)")
    server.add_argument("--title", default="Chat workbench", help="page title")
    add_sampling_arguments(parser)
    add_store_arguments(parser, owner=True)
    return parser.parse_args(argv)


def read_auth(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    lines = list(args.auth or [])
    if args.auth_file:
        try:
            lines += [line.strip() for line in Path(args.auth_file).read_text().splitlines() if line.strip() and not line.startswith("#")]
        except OSError as error:
            raise ChatError(f"--auth-file: can't read {args.auth_file}: {error.strerror}") from None
    pairs = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ChatError("--auth expects USER:PASS with both parts non-empty")
        pairs.append((user, password))
    return pairs or None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = parse_args(argv)
    try:
        auth = read_auth(args)
        conversations = open_store_from_args(args)  # first: a database that can't be opened is one line, before the model loads
        models = build_models(args, keeper=conversations)  # (the store keeps each model's defaults)
        engine = load_default(models)
        skills = SkillLibrary(build_skills(args), conversations.skills if conversations is not None else None)  # (users' own too)
        settings = settings_from_args(args)
        instructions, settings = starting_with(models, args, build_instructions(args, engine), settings)
    except ChatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from chat.web.page import build_ui  # here: Gradio takes seconds to import, and a bad flag is said before that

    if args.user and auth:
        print("error: --user and --auth: with --auth the login says whose chats they are", file=sys.stderr)
        return 1
    if set(args.admin) - {user for user, _ in auth or []}:
        print("error: --admin names a user of --auth (or --auth-file)", file=sys.stderr)
        return 1
    demo = build_ui(engine, skills, instructions, settings, title=args.title, conversations=conversations, everyone=args.user,
                    models=models, admins=frozenset(args.admin))
    concurrency = max(1, args.concurrency or default_concurrency(engine))
    demo.queue(default_concurrency_limit=concurrency, max_size=max(1, args.queue_size))
    if args.share and not auth:
        print("WARNING: --share without --auth: anyone with the link can use this model on your machine.", file=sys.stderr)
    _, local_url, share_url = demo.launch(
        server_name=args.host, server_port=args.port, share=args.share, auth=auth,
        prevent_thread_lock=True, quiet=True, show_error=True,
    )
    _mount_api(demo, args, models, skills, settings, instructions, auth)
    print(f"Chat workbench running at {local_url} (up to {concurrency} answers at once)", flush=True)
    print(f"Models: {len(models.names())} listed (the page's Models section); a new chat starts with {models.default}", flush=True)
    if args.share:
        print(f"Public link: {share_url}" if share_url else
              "Could not create a public link (no internet?): serving locally only.", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


def default_concurrency(engine) -> int:
    """Answers at once: several when they share model steps (batching) or a server batches them;
    one when they would only compete for the same processor and each get slower."""
    return SHARED_CONCURRENCY if engine.shares_steps else 1


def _mount_api(demo, args, models, skills, settings, instructions, auth) -> None:
    from chat.api.server import mount_api  # (with the page's imports: see build_ui's)

    api_key = getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV)
    engine = models.loaded_engine(models.default)
    mount_api(demo.app, engine=engine, skills=skills, defaults=settings, instructions=instructions, api_key=api_key, auth=auth,
              models=models)


if __name__ == "__main__":
    sys.exit(main())
