"""The app in real headless Chromium (Debian's chromium driven by Playwright), tiny model.

Each test does what a person does (type, press Enter, click the labelled buttons) and checks
what they would see. A screenshot of the app is saved to test-artifacts/app.png.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from chat.settings import GenerationSettings
from tests.helpers.apps import running_app
from tests.helpers.browser import (
    answers, message_box, open_section, open_tab, questions, send, set_max_new_tokens, shown_prompt, wait_done,
)
from tests.helpers.engines import make_engine
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for
from tests.helpers.workers import generation_workers

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
STOPS_WITHIN_S = 2.0  # the worker must end within a couple of tokens of Stop


@pytest.fixture(scope="module")
def app(chatty_engine_module):
    # Long answers (the model never meets EOS): there is time to watch streaming and press Stop.
    # 150 tokens: long enough to watch the text grow on a busy machine, short enough to stay quick.
    with running_app(chatty_engine_module, GenerationSettings(max_new_tokens=150, temperature=1.0)) as (demo, url):
        yield url


@pytest.fixture(scope="module")
def chatty_engine_module(tmp_path_factory):
    # An 8,192-token context: a 4,000-token answer (the Stop test) really runs for seconds. In the shared
    # 512-token model it was cut to the ~350 tokens left, which a fast moment finished before the test
    # looked for the running model.
    model = save_tiny_model(tmp_path_factory.mktemp("tiny-long"), context=8192)
    return make_engine(model, batching=True, endless=True)  # batching: as app.py runs it


@pytest.fixture
def page(browser, app):
    with open_tab(browser, app) as page:
        yield page


def test_a_message_streams_in_and_the_screenshot_is_saved(page):
    send(page, "Hello there!")
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if answers(page).count():
            seen.add(answers(page).last.inner_text())
        if "stop:" in page.locator("#status").inner_text():
            break
        time.sleep(0.02)
    assert len(seen) >= 3, f"expected the answer to grow in view, saw {len(seen)} states"
    assert questions(page).last.inner_text().strip() == "Hello there!"
    assert message_box(page).input_value() == ""  # the box empties on send
    status = page.locator("#status").inner_text()
    assert "tokens/s" in status and "first token" in status
    open_section(page, "Prompt")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)


def test_switching_skill_tags_the_message_and_expands_the_prompt(page):
    page.get_by_label("Skill").click()
    page.get_by_role("option", name="💎 Summarize").click()
    send(page, "Cats sleep a lot. Dogs bark at night.")
    wait_done(page)
    assert questions(page).last.inner_text().startswith("💎 Summarize: Cats sleep")
    prompt = shown_prompt(page)
    assert "two sentences" in prompt and "Cats sleep a lot." in prompt


def test_retry_gives_a_new_answer_undo_restores_the_text_clear_empties(page):
    send(page, "Tell me something")
    wait_done(page)
    first = answers(page).last.inner_text()
    page.get_by_role("button", name="Retry").click()
    page.wait_for_function("(old) => { const b = [...document.querySelectorAll('[data-testid=\"bot\"]')];"
                           " return b.length && b[b.length-1].innerText !== old; }", arg=first, timeout=30000)
    wait_done(page)
    assert questions(page).count() == 1 and answers(page).last.inner_text() != first
    page.get_by_role("button", name="Undo").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"user\"]').length === 0", timeout=10000)
    assert message_box(page).input_value() == "Tell me something"
    send(page, "one more")
    wait_done(page)
    page.locator("button", has_text="Clear").click()  # ours; the chat's trash icon does the same
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"bot\"], [data-testid=\"user\"]').length === 0", timeout=10000)


def test_stop_halts_the_model_not_just_the_display(page):
    set_max_new_tokens(page, 4000)
    send(page, "Talk for a long time")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"bot\"]').length > 0", timeout=20000)
    # The answer may wait a moment for the batch (the module's earlier tabs' answers end as their tabs close):
    # wait for the model to be generating rather than assume it after a fixed half second.
    assert wait_for(generation_workers, 10), f"the model should be generating; the page shows {answers(page).last.inner_text()[-200:]!r}"
    # And for its first words on the page: a Stop before them leaves no answer ("stopped before it began"), which is
    # right, but not what this test is about (a busy machine can take a while over the prompt).
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"bot\"]')].at(-1)?.innerText.trim().length > 0",
                           timeout=20000)
    page.get_by_role("button", name="Stop").click()
    assert wait_for(lambda: not generation_workers(), STOPS_WITHIN_S), "the worker must end within a couple of tokens of Stop"
    # Then the page shows where the answer ended: drawn after the model stopped, it is the answer's last update.
    page.wait_for_function("() => (document.querySelector('#status')?.innerText || '').includes('stop: cancelled')", timeout=10_000)
    assert "Stopped before the end" in answers(page).last.inner_text()


def test_edited_instructions_show_in_the_prompt_view(page):
    open_section(page, "Instructions")
    box = page.locator("#instructions textarea")
    box.fill("You are Captain Nemo. Answer like a sailor.")
    send(page, "Where are we?")
    wait_done(page)
    prompt = shown_prompt(page)
    assert prompt.startswith("<|im_start|>system\nYou are Captain Nemo. Answer like a sailor.<|im_end|>")
    page.get_by_role("button", name="Reset to default").click()
    page.wait_for_function("() => document.querySelector('#instructions textarea').value.startsWith('You are a helpful')", timeout=10000)


def test_two_tabs_chatting_at_once_stay_isolated(browser, app):
    with contextlib.ExitStack() as stack:
        tabs = [stack.enter_context(open_tab(browser, app)) for _ in range(2)]
        send(tabs[0], "first-tab-secret")
        send(tabs[1], "second-tab-secret")
        for tab in tabs:
            wait_done(tab)
        texts = [tab.locator(".bubble-wrap, [role=log]").first.inner_text() for tab in tabs]
        assert "first-tab-secret" in texts[0] and "second-tab-secret" not in texts[0]
        assert "second-tab-secret" in texts[1] and "first-tab-secret" not in texts[1]


def test_html_in_messages_is_shown_as_text_and_never_runs(page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    attack = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [link](javascript:window.__pwned=3)'
    send(page, attack)
    wait_done(page)
    shown = questions(page).last.inner_text()
    assert "<img src=x" in shown and "<script>" in shown  # visible as typed
    links = questions(page).last.locator("a")
    for index in range(links.count()):
        links.nth(index).click(timeout=2000, no_wait_after=True)
    # What the clicks set off has run once a task queued after them has: a javascript: link runs as a task.
    page.evaluate("() => new Promise(done => setTimeout(done))")
    assert page.evaluate("window.__pwned") is None and not dialogs
