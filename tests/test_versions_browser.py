"""Versions in real headless Chromium (tiny model, the app as app.py runs it, a real SQLite store):
retry and step through the answers, edit a message and go back to the old branch, Continue,
Reproduce, a reload that keeps the version shown, and the download that holds every version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chat.settings import GenerationSettings
from chat.store.store import Store
from tests.helpers.apps import running_app
from tests.helpers.browser import WAIT_MS, answers, open_section, open_tab, questions, send, wait_done
from tests.helpers.engines import make_engine

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def app(tiny_chat_dir, tmp_path_factory):
    # Sampled answers that never meet end-of-sequence: each version differs, and every answer runs to its limit.
    engine = make_engine(tiny_chat_dir, batching=True, endless=True)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'chats.sqlite3'}")
    with running_app(engine, GenerationSettings(max_new_tokens=16, temperature=1.0), conversations=store) as (demo, url):
        yield url


@pytest.fixture
def page(browser, app):
    with open_tab(browser, app) as page:
        yield page


def versions_line(page) -> str:
    return page.locator("#versions").inner_text()


# The status line's own text (the element also holds Gradio's progress tracker, which shows timers).
STATUS_JS = "(document.querySelector('#status [data-testid=\"markdown\"]')?.innerText || '')"
VERSIONS_JS = "(document.querySelector('#versions')?.innerText || '')"
LAST_ANSWER_JS = "([...document.querySelectorAll('[data-testid=\"bot\"]')].pop()?.innerText || '')"


def press(page, name: str, until_js: str, arg=None) -> None:
    """Clicks the button named `name`; waits until its answer has ended and `until_js` (a JS condition
    on `arg`) holds. The page sets the status to "generating" in the same update that shows the change
    `until_js` looks for, so both together mean the answer has ended."""
    page.get_by_role("button", name=name, exact=True).click()
    page.wait_for_function(f"(arg) => {STATUS_JS}.includes('stop:') && ({until_js})", arg=arg, timeout=60_000)


def step(page, name: str, expected: str) -> None:
    """Previous version / Next version, until the line above them says `expected` ("1 / 3")."""
    page.get_by_role("button", name=name, exact=True).click()
    page.wait_for_function("(k) => (document.querySelector('#versions')?.innerText || '').includes(k)", arg=expected, timeout=WAIT_MS)


def last_answer(page) -> str:
    """The last answer's text, without the "version k / n" line under it."""
    return re.sub(r"\s*version \d+ / \d+\s*$", "", answers(page).last.inner_text()).strip()


def test_retry_twice_then_step_back_to_the_first_answer_and_forward_again(page):
    send(page, "Hello")
    wait_done(page)
    texts = [last_answer(page)]
    for count in (2, 3):
        press(page, "Retry", f"{VERSIONS_JS}.includes('{count} / {count}')")
        texts.append(last_answer(page))
    assert len(set(texts)) == 3, "three different sampled answers"
    assert "3 / 3" in versions_line(page) and answers(page).last.inner_text().rstrip().endswith("version 3 / 3")
    step(page, "Previous version", "2 / 3")
    step(page, "Previous version", "1 / 3")
    assert last_answer(page) == texts[0] and answers(page).count() == 1
    step(page, "Next version", "2 / 3")
    assert last_answer(page) == texts[1]
    open_section(page, "How this answer was made")
    page.locator("#provenance").get_by_text("Answer 1").first.wait_for(timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "versions.png"), full_page=True)


def test_an_edited_first_message_is_answered_and_the_old_branch_comes_back_whole(page):
    for count, text in enumerate(("First question", "Second question"), start=1):
        send(page, text)
        page.wait_for_function(f"(n) => {STATUS_JS}.includes('stop:') && document.querySelectorAll('[data-testid=\"bot\"]').length == n",
                               arg=count, timeout=60_000)
    old_branch = [questions(page).nth(i).inner_text().strip() for i in range(2)]
    old_answers = [answers(page).nth(i).inner_text() for i in range(2)]
    questions(page).first.hover()
    page.get_by_role("button", name="Edit").first.click()
    editor = page.locator("textarea.edit-textarea").first  # the chat's own edit box
    editor.fill("First question, edited")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_function(f"() => {STATUS_JS}.includes('stop:') && {VERSIONS_JS}.includes('2 / 2')", timeout=60_000)
    assert questions(page).count() == 1 and questions(page).first.inner_text().strip() == "First question, edited"
    assert answers(page).count() == 1 and last_answer(page)
    assert "Your message 1" in versions_line(page) and "2 / 2" in versions_line(page)
    step(page, "Previous version", "1 / 2")
    assert [text.strip() for text in questions(page).all_inner_texts()] == old_branch
    assert answers(page).all_inner_texts() == old_answers


def test_continue_extends_the_same_bubble_after_the_token_limit(page):
    send(page, "Tell me a long story")
    wait_done(page)
    assert "stop: max tokens" in page.locator("#status").inner_text()
    story = last_answer(page)
    press(page, "Continue", f"{LAST_ANSWER_JS}.length > arg", len(answers(page).last.inner_text()))
    assert answers(page).count() == 1 and last_answer(page).startswith(story) and len(last_answer(page)) > len(story)


def test_reproduce_gives_the_same_text_and_says_so(page):
    send(page, "Hello again")
    wait_done(page)
    original = last_answer(page)
    press(page, "Reproduce", f"{VERSIONS_JS}.includes('2 / 2')")
    assert last_answer(page) == original and "2 / 2" in versions_line(page)
    open_section(page, "How this answer was made")
    panel = page.locator("#provenance")
    panel.get_by_text("identical text ✓").wait_for(timeout=WAIT_MS)
    assert re.search(r"seed \d+", panel.inner_text()) and "Tell" not in panel.inner_text()


def test_a_reload_keeps_the_version_shown_and_the_download_holds_every_version(page, tmp_path):
    send(page, "Pick one")
    wait_done(page)
    first = last_answer(page)
    press(page, "Retry", f"{VERSIONS_JS}.includes('2 / 2')")
    step(page, "Previous version", "1 / 2")
    page.reload()
    page.get_by_role("textbox", name="Message").wait_for()
    page.wait_for_function("() => (document.querySelector('#versions')?.innerText || '').includes('1 / 2')", timeout=WAIT_MS)
    assert last_answer(page) == first
    open_section(page, "Conversation file")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download conversation (JSON)").click()
    saved = json.loads((download.value.path()).read_text(encoding="utf-8"))
    answers_saved = [m["content"] for m in saved["messages"] if m["role"] == "assistant"]
    assert len(answers_saved) == 2 and " ".join(first.split()) in [" ".join(a.split()) for a in answers_saved]  # (a tab shows as a space)
    assert all(m["provenance"]["parts"][0]["seed"] is not None for m in saved["messages"] if m["role"] == "assistant")
