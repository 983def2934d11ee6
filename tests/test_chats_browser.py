"""Saved chats as users meet them, in real Chromium against app.py (a real process, a real database):
reload, restart, New chat, two users, a kill -9 in the middle of an answer, and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest

from chat.store.store import Store, user_owner
from tests.helpers.apps import ROOT, AppProcess
from tests.helpers.browser import answers, message_box, questions, send, wait_done
from tests.helpers.ports import free_port
from tests.helpers.postgres import postgres_server
from tests.helpers.stores import as_if_abandoned
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for

WAIT_MS = 30_000
FLAGS = ["--temperature", "0", "--max-new-tokens", "6"]


@contextlib.contextmanager
def app(model_dir, db: str, *flags: str, port: int | None = None):
    with AppProcess("--model", str(model_dir), "--db", db, *FLAGS, *flags, port=port) as running:
        running.wait_for_line("running at")
        try:
            yield running
        except BaseException:
            print("app.py printed:\n" + running.output())  # (in the failing test's report)
            raise


@contextlib.contextmanager
def tab(context, url: str, user: tuple[str, str] | None = None):
    page = context.new_page()
    page.goto(url)
    if user:
        page.get_by_label("username").fill(user[0])
        page.get_by_label("password").fill(user[1])
        page.get_by_role("button", name="Login").click()
    message_box(page).wait_for(timeout=WAIT_MS)
    chat_list(page).wait_for(timeout=WAIT_MS)
    try:
        yield page
    finally:
        page.close()


def chat_list(page):
    return page.locator("#chat-list")


def listed(page) -> list[str]:
    # Read in one go: the list re-renders while the page updates, and a label found first and read afterwards
    # may be gone by then (its read then waits 30 s for it to come back).
    return [text.strip() for text in chat_list(page).locator("label").all_inner_texts()]


def asked(page) -> list[str]:
    return [text.strip() for text in questions(page).all_inner_texts()]  # in one go: see `listed`


def chat(page, *texts: str) -> None:
    for text in texts:
        before = answers(page).count()
        send(page, text)
        # The message and "generating" show in one page update; then the answer's figures replace them.
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"bot\"]').length > {before}", timeout=WAIT_MS)
        wait_done(page, WAIT_MS)


def wait_listed(page, titles: list[str]) -> None:
    assert wait_for(lambda: listed(page) == titles, WAIT_MS / 1000), f"listed {listed(page)}, expected {titles}"


def test_a_chat_survives_reload_and_restart_and_new_chat_starts_another(browser, tiny_chat_dir, tmp_path):
    db = str(tmp_path / "chats.sqlite3")
    context = browser.new_context()  # one browser, kept across the restart (it keeps its own id)
    port = free_port()
    with app(tiny_chat_dir, db, port=port) as running, tab(context, running.url) as page:
        chat(page, "What is the capital of France?", "And of Germany?")
        wait_listed(page, ["What is the capital of France?"])
        page.reload()
        message_box(page).wait_for()
        assert wait_for(lambda: asked(page) == ["What is the capital of France?", "And of Germany?"], 20), asked(page)
    with app(tiny_chat_dir, db, port=port) as running, tab(context, running.url) as page:  # the app restarted, same address
        assert wait_for(lambda: asked(page) == ["What is the capital of France?", "And of Germany?"], 20), asked(page)
        page.get_by_role("button", name="New chat").click()
        assert wait_for(lambda: answers(page).count() == 0 and asked(page) == [], 10)
        chat(page, "Tell me about bread")
        wait_listed(page, ["Tell me about bread", "What is the capital of France?"])  # newest first
        chat_list(page).get_by_text("What is the capital of France?").click()  # and back to the first
        assert wait_for(lambda: asked(page) == ["What is the capital of France?", "And of Germany?"], 10), asked(page)
    context.close()


def test_users_never_see_each_others_chats_and_the_same_user_does_on_another_browser(browser, tiny_chat_dir, tmp_path):
    db = str(tmp_path / "chats.sqlite3")
    with app(tiny_chat_dir, db, "--auth", "alice:pw-a", "--auth", "bob:pw-b") as running:
        alice, bob, alice_again = (browser.new_context() for _ in range(3))
        with tab(alice, running.url, ("alice", "pw-a")) as page:
            chat(page, "alice's secret plan")
            wait_listed(page, ["alice's secret plan"])
        with tab(bob, running.url, ("bob", "pw-b")) as page:
            assert listed(page) == [] and asked(page) == []
            chat(page, "bob's shopping list")
            wait_listed(page, ["bob's shopping list"])
            # As a person types (the box searches on a keystroke): one search, for the whole word.
            page.get_by_label("Search chats").fill("secre")
            page.get_by_label("Search chats").press("t")
            # The search has run when bob's own chat leaves the list; alice's must not have come in with it.
            assert wait_for(lambda: listed(page) != ["bob's shopping list"], 10) and listed(page) == []
        with tab(alice_again, running.url, ("alice", "pw-a")) as page:  # alice on another device
            wait_listed(page, ["alice's secret plan"])
            chat_list(page).get_by_text("alice's secret plan").click()
            assert wait_for(lambda: asked(page) == ["alice's secret plan"], 10)
        for context in (alice, bob, alice_again):
            context.close()
    assert [c.title for c in Store(f"sqlite:///{db}").chats(user_owner("bob"))] == ["bob's shopping list"]


def test_kill_9_in_the_middle_of_an_answer_loses_neither_the_message_nor_what_was_answered(browser, tmp_path):
    endless = save_tiny_model(tmp_path / "endless", endless=True, context=8192)  # an answer of minutes
    db = str(tmp_path / "chats.sqlite3")
    context = browser.new_context()
    store = Store(f"sqlite:///{db}")

    def streamed() -> str:
        with store.engine.connect() as connection:
            owners = connection.exec_driver_sql("SELECT DISTINCT owner FROM conversations").scalars().all()
        chats = store.chats(owners[0]) if owners else []
        messages = store.open_chat(owners[0], chats[0].id).messages if chats else []
        return messages[-1]["content"] if len(messages) == 2 else ""

    port = free_port()
    with app(endless, db, "--max-new-tokens", "32768", port=port) as running, tab(context, running.url) as page:
        send(page, "Tell me everything")
        assert wait_for(lambda: len(streamed()) > 0, 60), "the answer was never written while it streamed"
        # The browser learnt which chat it shows with the message, before the answer began (not after: then a
        # kill -9 soon after the answer's first words found the browser not knowing it, and the restart showed none).
        assert listed(page) == ["Tell me everything"]
        running.process.kill()  # kill -9
        running.process.wait(10)
    kept = streamed()
    as_if_abandoned(store)  # nobody writes that answer any more
    with app(endless, db, port=port) as running, tab(context, running.url) as page:
        assert wait_for(lambda: asked(page) == ["Tell me everything"], 20), asked(page)
        shown = answers(page).first.inner_text()
        # (the random model's text holds control characters a page doesn't show: compare the store's copy)
        assert "Stopped before the end" in shown and shown.split("⏹️")[0].strip()
    assert streamed() == kept  # what was answered before the kill, kept as it was
    context.close()


def test_two_instances_on_one_postgresql_share_a_users_chats(browser, tiny_chat_dir):
    with postgres_server() as db, app(tiny_chat_dir, db, "--auth", "alice:pw") as first, app(tiny_chat_dir, db, "--auth", "alice:pw") as second:
        one, other = browser.new_context(), browser.new_context()
        with tab(one, first.url, ("alice", "pw")) as page:
            chat(page, "Begun on the first instance")
            wait_listed(page, ["Begun on the first instance"])
        with tab(other, second.url, ("alice", "pw")) as page:
            wait_listed(page, ["Begun on the first instance"])
            chat_list(page).get_by_text("Begun on the first instance").click()
            assert wait_for(lambda: asked(page) == ["Begun on the first instance"], 10)
            chat(page, "Continued on the second")
        one.close()
        other.close()
        printed = first.output() + second.output()
    assert db.split("@")[0].split(":")[-1] not in printed  # the database password is never printed


def test_a_database_that_cant_be_opened_stops_the_app_with_one_line(tiny_chat_dir, tmp_path):
    broken = tmp_path / "chats.sqlite3"
    broken.write_bytes(b"not a database" * 100)
    done = subprocess.run([sys.executable, "app.py", "--model", str(tiny_chat_dir), "--db", str(broken)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: can't open the conversation database sqlite:///{broken}: the file is not a SQLite database"]
