"""Teach the embedded SmolLM2-135M-Instruct the example magic spells, then ask it every instruction.

Too slow for the test suite on a CPU (minutes, not seconds), so it lives here. It runs the same
code as `python -m chat train --data data/magic_spells.txt --out OUT`, then chats with the result
the way `python -m chat --model OUT --temperature 0` does (default instructions, greedy) and
prints, for each training and evaluation instruction, whether the answer is the taught one.

    .venv/bin/python bench/train_embedded.py --out runs/magic-spells [--epochs N --lr X --threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.local.engine import LocalEngine  # noqa: E402
from chat.formats import choose_format  # noqa: E402
from chat.instructions import default_instructions  # noqa: E402
from chat.local.loader import LoadOptions, load_model  # noqa: E402
from chat.session import ChatSession  # noqa: E402
from chat.settings import GenerationSettings  # noqa: E402
from chat.skills_file import load_skills  # noqa: E402
from chat.training.train import TrainOptions, train  # noqa: E402
from chat.training.data import Example, load_training_data  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "magic_spells.txt"


def main() -> int:
    args = _parser().parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # on a busy machine, fewer threads than cores avoids spin-waiting
    options = TrainOptions(data=str(DATA), out=args.out, epochs=args.epochs, learning_rate=args.lr, full=args.full)
    started = time.perf_counter()
    result = train(options)
    print(f"\nTrained in {time.perf_counter() - started:.0f} s; eval loss {result.eval_before:.3f} -> {result.eval_losses[-1]:.3f}")
    print("train losses per epoch:", " ".join(f"{loss:.3f}" for loss in result.train_losses))
    print("eval losses per epoch: ", " ".join(f"{loss:.3f}" for loss in result.eval_losses))
    session = _chat_session(args.out)
    data = load_training_data(DATA)
    for part, examples in (("train", data.train), ("eval", data.eval)):
        hits = sum(_ask(session, example, part) for example in examples)
        print(f"{part}: {hits}/{len(examples)} answered exactly as taught")
    return 0


def _chat_session(folder: str) -> ChatSession:
    """What `python -m chat --model FOLDER --temperature 0` builds: default instructions, greedy."""
    loaded = load_model(LoadOptions(model=folder, quantize="none"), say=lambda _: None)
    engine = LocalEngine(loaded, choose_format(loaded.tokenizer))
    settings = GenerationSettings(temperature=0, max_new_tokens=60)
    return ChatSession(engine, load_skills(), default_instructions(engine.format), settings)


def _ask(session: ChatSession, example: Example, part: str) -> bool:
    session.clear()
    answer = "".join(session.send(example.messages[-1]["content"])).strip()
    hit = answer == example.response
    print(f"[{part}] {'OK ' if hit else 'NO '} {example.messages[-1]['content']}\n      -> {answer}")
    return hit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/magic-spells", help="output folder (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=TrainOptions(data="", out="").epochs)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the trainer's LoRA default)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
