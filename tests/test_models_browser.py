"""Models on the page, in real Chromium against app.py started with two models: pick one, send, switch, send,
reload; the Models section loads and unloads with what each uses; a model that won't fit is refused."""

from __future__ import annotations

import re

from chat.library.entries import LocalFlags, local_entries
from chat.local.discovery import path_model
from tests.helpers.apps import AppProcess
from tests.helpers.browser import answers, chromium, message_box, open_section, send, toast_text, wait_done
from tests.helpers.waiting import wait_for

WAIT_MS = 30_000
FLAGS = ["--temperature", "0", "--max-new-tokens", "6"]


def pick_model(page, name: str) -> None:
    """The Model menu beside Skill, as a person uses it; returns once the chat's model is loaded."""
    page.get_by_label("Model", exact=True).click()
    page.locator("#model").get_by_role("option", name=name, exact=True).click()
    wait_loaded(page, name)


def chat_once(page, text: str) -> None:
    before = answers(page).count()
    send(page, text)
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"bot\"]').length > {before}", timeout=WAIT_MS)
    wait_done(page, WAIT_MS)


def row_of(page, name: str) -> str:
    return next(text for text in page.locator("#model-table tr").all_inner_texts() if text.startswith(name))


def wait_loaded(page, name: str, loaded: bool = True) -> None:
    """Until the Models table shows `name` loaded (or not): the table is drawn again after each answer and each
    Load or Unload, in an event of its own that may come after the answer's last page."""
    page.wait_for_function("([name, loaded]) => [...document.querySelectorAll('#model-table tr')].some((row) => "
                           "row.innerText.startsWith(name) && row.innerText.includes('● loaded') === loaded)",
                           arg=[name, loaded], timeout=WAIT_MS)


def test_a_chats_model_is_picked_switched_mid_chat_named_under_each_answer_and_back_after_a_reload(
        tmp_path, tiny_chat_dir, tiny_base_dir):
    first, second = f"{tiny_chat_dir.name} · int4", f"{tiny_base_dir.name} · int8"
    with AppProcess("--model", str(tiny_chat_dir), "--model", str(tiny_base_dir), "--db", str(tmp_path / "chats.sqlite3"),
                    *FLAGS) as app, chromium() as browser:
        app.wait_for_line("running at")
        page = browser.new_context(viewport={"width": 1200, "height": 1400}).new_page()
        page.goto(app.url)
        message_box(page).wait_for(timeout=WAIT_MS)
        open_section(page, "Models")
        pick_model(page, first)
        chat_once(page, "Hello there")
        pick_model(page, second)
        chat_once(page, "And who are you?")
        written = answers(page).all_inner_texts()
        assert f"model: {first}" in written[0] and f"model: {second}" in written[1], written

        page.reload()
        message_box(page).wait_for(timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"bot\"]').length == 2", timeout=WAIT_MS)
        written = answers(page).all_inner_texts()
        assert f"model: {first}" in written[0] and f"model: {second}" in written[1], written
        assert page.get_by_label("Model", exact=True).input_value() == second
        assert page.locator("#chat-list label").all_inner_texts() == [f"Hello there · {second}"]
        open_section(page, "Models")  # drawn as things are now, not as they were when the page was built
        assert "● loaded" in row_of(page, first) and "● loaded" in row_of(page, second)
        options = page.get_by_label("Model", exact=True)
        options.click()
        assert f"{tiny_base_dir.name} · float32" in page.locator("#model").get_by_role("option").all_inner_texts()


def budget_between(folder, smaller: str, larger: str) -> int:
    """A --memory-budget that holds the `smaller` variant and not the `larger` (the app's estimates: 4 answers at once)."""
    entries = {e.info.weights: e.info.estimate.total for e in local_entries(path_model(folder, "--model"), LocalFlags(answers=4), gpu=False)}
    assert entries[smaller] < entries[larger]
    return (entries[smaller] + entries[larger]) // 2


def test_unload_frees_the_model_and_one_over_the_budget_is_refused_with_nothing_changed(tiny_chat_dir):
    budget = budget_between(tiny_chat_dir, "int8", "float32")
    with AppProcess("--model", str(tiny_chat_dir), "--db", "none", "--memory-budget", str(budget), *FLAGS) as app, \
            chromium() as browser:
        app.wait_for_line("running at")
        page = browser.new_context(viewport={"width": 1200, "height": 1400}).new_page()
        page.goto(app.url)
        message_box(page).wait_for(timeout=WAIT_MS)
        default = f"{tiny_chat_dir.name} · int8"
        open_section(page, "Models")
        assert "● loaded" in row_of(page, default) and re.search(r"uses \d+ [kM]B", row_of(page, default))

        page.get_by_label("Model", exact=True).click()  # the float32 variant alone is over the budget
        page.locator("#model").get_by_role("option", name=f"{tiny_chat_dir.name} · float32", exact=True).click()
        refusal = toast_text(page, "won't fit")
        assert "--memory-budget" in refusal and "KV cache" in refusal
        # Nothing else changed. (The warning shows while the event still runs: its page comes after.)
        assert wait_for(lambda: page.get_by_label("Model", exact=True).input_value() == default, WAIT_MS / 1000)
        assert "loaded" in row_of(page, default) and "loaded" not in row_of(page, f"{tiny_chat_dir.name} · float32")

        page.get_by_label("Model to load, unload or set up").click()
        page.locator("#model-picked").get_by_role("option", name=default, exact=True).click()
        page.get_by_role("button", name="Unload").click()
        wait_loaded(page, default, False)
        chat_once(page, "Still there?")  # the chat's model loads again for its next message
        assert "stop:" in page.locator("#status").inner_text()
        wait_loaded(page, default)
