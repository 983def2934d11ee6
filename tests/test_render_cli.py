"""`python -m chat render`: the exact prompt on stdout, the token count (or one error line) on stderr.

The flag-heavy and failing runs go through a real subprocess (exit code, encoding, no traceback);
the others call `main` in-process, the same code without the start-up cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chat.__main__ import main
from chat.instructions import CHAT_INSTRUCTIONS
from chat.settings import GenerationSettings
from chat.skills_file import DEFAULT_SKILLS_PATH, load_skills

REPO = Path(__file__).resolve().parent.parent
TRANSLATE = "🔄 Translate to German"
HISTORY = [
    {"role": "system", "content": "Saved instructions."},
    {"role": "user", "content": "Hi <|im_end|> there", "typed": "Hi <|im_end|> there", "skill": "💬 Chat"},
    {"role": "assistant", "content": "Hello! {braces} stay."},
]


@pytest.fixture(scope="module")
def history_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("render") / "history.json"
    path.write_text(json.dumps(HISTORY, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tiny_chat_dir, history_file):
    """The subprocess runs, started together: each pays Python + torch start-up, so they overlap."""
    commands = {
        "skill-history-instructions": [
            "--message", "Guten Tag, wie geht's? 😀", "--skill", TRANSLATE,
            "--history", str(history_file), "--instructions", "Answer in one line.",
        ],
        "bad-skill": ["--message", "Hi", "--skill", "Poetry"],
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "chat", "render", "--model", str(tiny_chat_dir), *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        for name, args in commands.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=240)
        results[name] = (process.returncode, stdout, stderr)
    return results


def expected_prompt(engine, messages):
    """What the engine itself makes of `messages` with the CLI's default settings."""
    return engine.prepare(messages, GenerationSettings()).prompt


def test_prints_exactly_the_prompt_and_counts_its_tokens(tiny_chat_dir, tiny_engine, capsys):
    code = main(["render", "--model", str(tiny_chat_dir), "--message", "Hello there"])
    stdout, stderr = capsys.readouterr()
    prompt = expected_prompt(tiny_engine, [
        {"role": "system", "content": CHAT_INSTRUCTIONS},
        {"role": "user", "content": "Hello there"},
    ])
    assert code == 0, stderr
    assert stdout == prompt.text
    assert f"{len(prompt.ids)} tokens (context 512)" in stderr


def test_skill_history_and_instructions_shape_the_prompt(runs, tiny_engine):
    code, stdout, stderr = runs["skill-history-instructions"]
    translate = load_skills(DEFAULT_SKILLS_PATH).get(TRANSLATE)
    prompt = expected_prompt(tiny_engine, [
        {"role": "system", "content": "Answer in one line."},  # --instructions wins over the file's
        *[{"role": m["role"], "content": m["content"]} for m in HISTORY[1:]],
        {"role": "user", "content": translate.expand("Guten Tag, wie geht's? 😀")},
    ])
    assert code == 0, stderr
    assert stdout == prompt.text
    assert "Hi <|im_end|> there<|im_end|>" in stdout  # the typed token is shown as typed
    assert f"\n{len(prompt.ids)} tokens (context 512)" in stderr


def test_history_brings_its_own_instructions(tiny_chat_dir, history_file, capsys):
    # Without --instructions the file's own are used.
    code = main(["render", "--model", str(tiny_chat_dir), "--message", "And now?", "--history", str(history_file)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert stdout.startswith("<|im_start|>system\nSaved instructions.<|im_end|>\n")
    assert stdout.endswith("<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n")


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_bad_skill_name_is_one_error_line(runs):
    code, stdout, stderr = runs["bad-skill"]
    assert code == 1 and stdout == ""
    assert one_error_line(stderr).startswith("error: unknown skill 'Poetry'; known skills: 💬 Chat, 🔄 Translate")


def test_an_unknown_model_is_one_error_line(capsys):
    code = main(["render", "--model", "./no-such-model", "--message", "Hi"])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and stdout == ""
    assert one_error_line(stderr) == "error: model folder not found: no-such-model (a hub id looks like owner/name)"
