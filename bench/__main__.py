"""Every performance table of the README, one after another: `python -m bench`.

    .venv/bin/python -m bench --threads 2 --repeats 5 --out bench/results.md

Each benchmark runs in its own Python process (one's threads, caches and memory high-water
mark never reach the next) and prints one Markdown table; they are printed as they finish and,
with --out, collected into one file. About an hour on a 2-core CPU; --only picks some.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (module, its extra flags): the order of the README's Performance section.
BENCHMARKS = {
    "peers": [],
    "weights": [],
    "multiturn": [],
    "longchat": [],
    "streaming": [],
    "webapp": [],
    "stops": [],
    "concurrency": [],
    "concurrency-tiny": ["--model", "tiny"],
    "memory": [],
    "models": [],
    "compare": [],
    "store": [],
    "versions": [],
    "tokens": [],
}
TAKES_REPEATS = {"peers", "weights", "multiturn", "streaming", "webapp", "concurrency", "concurrency-tiny", "memory", "models", "compare", "store", "tokens"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions per figure (default %(default)s)")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    p.add_argument("--out", type=Path, help="also write all tables to this Markdown file")
    args = p.parse_args()
    tables, failed = [], []
    for name in args.only or BENCHMARKS:
        command = [sys.executable, "-m", f"bench.{name.split('-')[0]}", "--threads", str(args.threads), *BENCHMARKS[name]]
        if name in TAKES_REPEATS:
            command += ["--repeats", str(args.repeats)]
        print(f"## {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
        minutes = (time.perf_counter() - start) / 60
        if done.returncode != 0:
            failed.append(name)
            print(f"## {name} FAILED (exit {done.returncode}) after {minutes:.1f} min", file=sys.stderr, flush=True)
            continue
        print(done.stdout, flush=True)
        tables.append(f"<!-- {' '.join(command[1:])}: {minutes:.1f} min -->\n{done.stdout.strip()}\n")
        if args.out:
            args.out.write_text("\n".join(tables))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
