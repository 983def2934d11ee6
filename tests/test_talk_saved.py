"""Saved conversations in the terminal chat (`python -m chat`), as a user meets them: chats that
outlive the process, /chats, /new, --resume, and an answer cut off by kill -9 that is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from chat.store.store import Store
from tests.helpers.stores import as_if_abandoned
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for
from tests.test_talk import GREEDY_FLAGS, ROOT, WAIT_S, chat_env, piped


def db_flag(tmp_path) -> list[str]:
    return ["--db", str(tmp_path / "chats.sqlite3"), "--user", "alice"]


def stored(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")


def test_a_terminal_chat_is_saved_and_resumed_in_a_later_run(tmp_path, tiny_chat_dir):
    first = piped(tmp_path, tiny_chat_dir, "Hello there\nHow are you?\n", *db_flag(tmp_path))
    assert first.returncode == 0, first.stderr.decode()
    (chat,) = stored(tmp_path).chats("user:alice")
    assert chat.title == "Hello there"
    later = piped(tmp_path, tiny_chat_dir, "And now?\n/chats\n", *db_flag(tmp_path), "--resume")
    assert later.returncode == 0, later.stderr.decode()
    messages = stored(tmp_path).open_chat("user:alice", chat.id).messages
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Hello there", "How are you?", "And now?"]
    assert chat.id in later.stdout.decode() and "Hello there" in later.stdout.decode()  # /chats lists it
    assert "Continuing 'Hello there' (4 messages)" in later.stderr.decode()


def test_new_starts_another_chat_and_each_user_sees_only_their_own(tmp_path, tiny_chat_dir):
    done = piped(tmp_path, tiny_chat_dir, "First topic\n/new\nSecond topic\n", *db_flag(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    assert [c.title for c in stored(tmp_path).chats("user:alice")] == ["Second topic", "First topic"]
    bob = piped(tmp_path, tiny_chat_dir, "/chats\n", "--db", str(tmp_path / "chats.sqlite3"), "--user", "bob")
    assert "No saved conversations yet." in bob.stdout.decode() and "topic" not in bob.stdout.decode()
    refused = piped(tmp_path, tiny_chat_dir, "", "--db", str(tmp_path / "chats.sqlite3"), "--user", "bob", "--resume",
                    stored(tmp_path).chats("user:alice")[0].id)
    assert refused.returncode == 1 and "no saved conversations match" in refused.stderr.decode()


def test_db_none_saves_nothing_and_a_broken_database_is_one_line(tmp_path, tiny_chat_dir):
    done = piped(tmp_path, tiny_chat_dir, "Hello\n/chats\n", "--db", "none")
    assert done.returncode == 1 and "conversations are not saved (--db none)" in done.stderr.decode()
    assert not (tmp_path / "data").exists()  # not even the default file
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database" * 100)
    failed = piped(tmp_path, tiny_chat_dir, "Hello\n", "--db", str(broken))
    lines = failed.stderr.decode().strip().splitlines()
    assert failed.returncode == 1 and lines == [f"error: can't open the conversation database sqlite:///{broken}: "
                                                "the file is not a SQLite database"]


def test_the_default_database_is_one_file_in_the_user_data_folder(tmp_path, tiny_chat_dir):
    assert piped(tmp_path, tiny_chat_dir, "Hello\n").returncode == 0
    default = tmp_path / "data" / "chat-workbench" / "chats.sqlite3"
    assert default.exists() and Store(f"sqlite:///{default}").chats(f"user:{_login()}")[0].title == "Hello"


def _login() -> str:
    import getpass

    return getpass.getuser()


def test_an_answer_cut_off_by_kill_9_is_there_after_a_restart_marked_interrupted(tmp_path):
    endless = save_tiny_model(tmp_path / "endless", endless=True, context=8192)  # an answer of minutes: killed mid-way
    flags = [*GREEDY_FLAGS, "--max-new-tokens", "32768", *db_flag(tmp_path)]
    process = subprocess.Popen([sys.executable, "-m", "chat", "--model", str(endless), *flags], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=chat_env(tmp_path))
    try:
        process.stdin.write(b"Tell me everything\n")
        process.stdin.flush()

        def answer_on_disk() -> str:
            chats = stored(tmp_path).chats("user:alice")
            messages = stored(tmp_path).open_chat("user:alice", chats[0].id).messages if chats else []
            return messages[-1]["content"] if len(messages) == 2 else ""

        assert wait_for(lambda: len(answer_on_disk()) > 0, WAIT_S), "the answer was never written while it streamed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    written = answer_on_disk()
    as_if_abandoned(stored(tmp_path))  # no one writes it any more
    later = subprocess.run([sys.executable, "-m", "chat", "--model", str(endless), *flags, "--resume"], input=b"",
                           capture_output=True, cwd=tmp_path, env=chat_env(tmp_path), timeout=WAIT_S * 2)
    assert later.returncode == 0, later.stderr.decode()
    (question, answer) = stored(tmp_path).open_chat("user:alice", stored(tmp_path).chats("user:alice")[0].id).messages
    assert question["content"] == "Tell me everything" and answer["content"] == written and answer["status"] == "interrupted"
    assert "Continuing 'Tell me everything' (2 messages)" in later.stderr.decode()


def test_new_leaves_the_last_chat_as_it_was(tmp_path, tiny_chat_dir):
    done = piped(tmp_path, tiny_chat_dir, "First topic\n/new\n", *db_flag(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    (chat,) = stored(tmp_path).chats("user:alice")
    assert [m["content"] for m in stored(tmp_path).open_chat("user:alice", chat.id).messages][:1] == ["First topic"]
