"""The model list in the terminal chat, as a user meets it: /models lists every model and marks the chat's,
/model switches the model the next answer comes from (by name, base name or a part of it), a model that
can't load is one line and changes nothing, /unload frees one, a saved chat reopens with its own model, and
an adapter trained here is listed by itself. Real tiny models throughout, loaded through the real list."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from chat.__main__ import main
from chat.cli.talk import Talk
from chat.library.entries import LocalFlags, local_entries
from chat.local.discovery import LocalModel, path_model
from chat.session import ChatSession
from chat.shelf import ModelShelf
from chat.skills import Skill, SkillBook
from chat.store.store import Store
from tests.helpers.settings import greedy

pytestmark = pytest.mark.usefixtures("one_torch_thread", "no_worker_left")

FLAGS = LocalFlags(batching=False, answers=1)  # one answer at a time, as the terminal asks
A, B = "tiny-a · int8", "tiny-b · int8"  # each tiny model's default variant on a CPU (`--quantize auto`)
OWNER = "user:alice"


def shelf(*models: LocalModel, **limits) -> ModelShelf:
    """The model list of `models`, each in every CPU weight format, loading on demand as the app's list does."""
    return ModelShelf(lambda: [entry for model in models for entry in local_entries(model, FLAGS, gpu=False)],
                      say=lambda _: None, **limits)


@pytest.fixture
def tiny_models(tiny_chat_dir, tiny_base_dir) -> list[LocalModel]:
    return [path_model(tiny_chat_dir, "--model", "tiny-a"), path_model(tiny_base_dir, "--model", "tiny-b")]


@pytest.fixture
def two(tiny_models) -> ModelShelf:
    return shelf(*tiny_models)


def talk_on(models: ModelShelf, store: Store | None = None) -> Talk:
    """A piped terminal chat (answers on `talk.out`, notes and errors on `talk.err`) on the list's default model."""
    session = ChatSession(models.engine(models.default), SkillBook([Skill("Chat", "{message}")]), "", greedy(), models=models)
    return Talk(session, interactive=False, out=io.StringIO(), err=io.StringIO(), store=store, owner=OWNER)


def run(talk: Talk, *lines: str) -> None:
    talk.run_lines(f"{line}\n" for line in lines)


def answered_by(talk: Talk) -> str:
    """The model the last answer names as its maker."""
    answer = talk.session.history[-1]
    assert answer["role"] == "assistant"
    return answer["provenance"].model


def listed(talk: Talk) -> dict[str, str]:
    """/models, as {model name: its line}."""
    before = len(talk.out.getvalue())
    run(talk, "/models")
    lines = talk.out.getvalue()[before:].splitlines()
    return {line[2:].split(". ", 1)[1].split(": ", 1)[0]: line for line in lines}


def test_models_lists_every_model_with_its_facts_and_marks_the_chats_own(tiny_models, tmp_path):
    broken = path_model(tmp_path / "gone", "--models-dir")  # listed with its problem, the others stay usable
    talk = talk_on(shelf(*tiny_models, broken))
    lines = listed(talk)
    weights = ("int8", "int4", "float32")
    assert list(lines) == [*(f"tiny-a · {w}" for w in weights), *(f"tiny-b · {w}" for w in weights), *(f"gone · {w}" for w in weights)]
    assert [name for name, line in lines.items() if line.startswith("*")] == [A]
    assert "loaded (uses " in lines[A] and "not loaded" in lines[B]
    for fact in ("int8 weights", "K parameters", "context 512", "estimate ~", " kB of RAM"):
        assert fact in lines[B], fact
    assert lines["gone · int8"].endswith(f"; can't load: {tmp_path / 'gone'}: not found (expected a model folder or a .gguf file)")


def test_model_switches_the_next_answer_to_the_named_model(two):
    talk = talk_on(two)
    run(talk, "Hello")
    assert answered_by(talk) == A
    run(talk, "/model tiny-b", "Hello again")
    assert answered_by(talk) == B and talk.session.model == B
    assert "Model: tiny-b · int8" in talk.err.getvalue().splitlines()
    assert lines_marked(listed(talk)) == [B]
    run(talk, "/model TINY-A · FLOAT", "/model")  # a part of the name, in any case
    assert talk.session.model == "tiny-a · float32"
    assert "Model: tiny-a · float32 (/models lists them)" in talk.out.getvalue()  # /model alone says which one
    run(talk, "One more")
    assert answered_by(talk) == "tiny-a · float32"
    assert not talk.failed


def lines_marked(lines: dict[str, str]) -> list[str]:
    return [name for name, line in lines.items() if line.startswith("*")]


@pytest.mark.parametrize("typed, said", [
    ("nosuch", "error: no model called 'nosuch'; the list has: tiny-a · int8, tiny-a · int4, tiny-a · float32, tiny-b · int8, "
               "tiny-b · int4, tiny-b · float32"),
    ("int4", "error: 'int4' matches several models: tiny-a · int4, tiny-b · int4; type more of the name"),
    ("tiny", "error: 'tiny' matches several models: tiny-a · int8, tiny-a · int4, tiny-a · float32, tiny-b · int8, "
             "tiny-b · int4, tiny-b · float32; type more of the name"),
])
def test_an_unknown_or_unclear_name_names_the_candidates_and_changes_nothing(two, typed, said):
    talk = talk_on(two)
    run(talk, f"/model {typed}", "Hello")
    assert talk.err.getvalue().splitlines() == [said]
    assert talk.session.model == A and answered_by(talk) == A
    assert [info.name for info in two.listing() if info.loaded] == [A]  # nothing else was loaded


def test_a_model_that_does_not_fit_is_one_line_and_the_chat_goes_on_with_its_model(tiny_models):
    probe = shelf(*tiny_models)
    small, big = (probe.info(f"tiny-b · {w}").estimate.total for w in ("int8", "float32"))
    talk = talk_on(shelf(*tiny_models, memory_budget=(small + big) // 2))
    run(talk, "/model tiny-b · float32", "Hello")
    [line] = talk.err.getvalue().splitlines()
    assert line.startswith("error: tiny-b · float32 won't fit: it needs ~") and "--memory-budget" in line
    assert talk.session.model == A and answered_by(talk) == A


def test_unload_frees_a_model_and_the_chat_loads_it_again_at_its_next_answer(two):
    talk = talk_on(two)
    run(talk, "/unload tiny-a")
    assert "Unloaded tiny-a · int8 (this chat loads it again at its next answer)" in talk.err.getvalue()
    assert "not loaded" in listed(talk)[A]
    run(talk, "Hello", "/unload tiny-b")
    assert answered_by(talk) == A and two.info(A).loaded
    assert "tiny-b · int8 is not loaded." in talk.err.getvalue()
    assert not talk.failed


def test_a_saved_chat_reopens_with_the_model_it_was_saved_with(two, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    talk = talk_on(two, store)
    run(talk, "First topic", "/new", "/model tiny-b", "Second topic")
    assert answered_by(talk) == B
    chats = {chat.title: chat for chat in store.chats(OWNER)}
    assert (chats["First topic"].model, chats["Second topic"].model) == (A, B)
    run(talk, f"/open {chats['First topic'].id}", "And now?")
    assert f"Model: {A} (this conversation's)" in talk.err.getvalue().splitlines()
    assert answered_by(talk) == A
    assert not talk.failed


def test_an_adapter_trained_here_is_listed_in_the_terminal_chat(tmp_path, tiny_chat_dir, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # where the list of trained models is kept
    data = tmp_path / "spells.txt"
    data.write_text("Say hello. # Hello, how are you today?\n# _EVAL_\nSay hi. # Hello!\n", encoding="utf-8")
    out = tmp_path / "my-adapter"
    assert main(["train", "--data", str(data), "--model", str(tiny_chat_dir), "--out", str(out), "--epochs", "1"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("/models\n"))  # a piped terminal chat, in this process
    assert main(["talk", "--model", str(tiny_chat_dir), "--db", "none"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  ") and ". my-adapter · int8: " in line for line in lines), lines
    assert lines[0].startswith(f"* 1. {tiny_chat_dir.name} · int8: ")  # the --model given answers
