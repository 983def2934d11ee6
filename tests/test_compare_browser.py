"""Compare side by side in real headless Chromium (tiny model, batching as app.py runs it, a real SQLite store):
temperature 0 against 1.2 on one model, both columns growing before either ends; the word diff; a blind vote that
shows the names and locks; a reload that keeps the columns and the vote; Continue with B, and the next prompt holds
B's answer; the leaderboard; a contender that can't be is refused and the message stays in the box."""

from __future__ import annotations

import re

import pytest

from chat.settings import GenerationSettings
from chat.store.store import Store
from tests.helpers.apps import running_app
from tests.helpers.browser import WAIT_MS, answers, message_box, open_section, open_tab, send, shown_prompt, toast_text, wait_done
from tests.helpers.engines import make_engine, paced
from tests.helpers.tiny_models import save_tiny_model

pytestmark = pytest.mark.browser
TOKENS = 200

# Every state the columns are drawn in, recorded in the page as it happens: [[ended, letters of text], …] per draw.
RECORD_JS = """() => {
    window.compareDraws = [];
    new MutationObserver(() => {  // (on the page: the columns are not in it until a comparison shows them)
        const drawn = [...document.querySelectorAll('#compare-columns .compare-column')].map((c) =>
            [c.dataset.ended === 'true', c.querySelector('.compare-text').innerText.replace('⏳', '').trim().length]);
        const last = JSON.stringify(window.compareDraws.at(-1));
        if (drawn.length && JSON.stringify(drawn) !== last) window.compareDraws.push(drawn);
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
ALL_ENDED_JS = """(count) => { const c = [...document.querySelectorAll('#compare-columns .compare-column')];
    return c.length === count && c.every((column) => column.dataset.ended === 'true'); }"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # Every answer runs to its limit; a context that holds the compared answers and the next message.
    model = save_tiny_model(tmp_path_factory.mktemp("tiny-compare"), context=4096)
    # Each step lasts 15 ms at least: a comparison takes seconds on any CPU, so the page draws its columns growing
    # many times even where the stream's first page comes late (a busy machine).
    engine = paced(make_engine(model, batching=True, endless=True), 0.015)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'chats.sqlite3'}")
    with running_app(engine, GenerationSettings(max_new_tokens=TOKENS, temperature=0), conversations=store) as (demo, url):
        yield url


@pytest.fixture
def page(browser, app):
    with open_tab(browser, app) as page:
        yield page


def columns_text(page) -> str:
    return page.locator("#compare-columns").inner_text()


def column_texts(page) -> list[str]:
    return page.locator("#compare-columns .compare-text").all_inner_texts()


def words(text: str) -> str:
    return " ".join(text.split())


def compare(page, text: str) -> None:
    """The Compare section's boxes as they come (the chat as it is, temperature=1.2), `text` compared."""
    open_section(page, "⚖️ Compare side by side")
    assert page.locator("#contender-2 textarea, #contender-2 input").first.input_value() == "temperature=1.2"
    message_box(page).fill(text)
    page.locator("#compare-send").click()


def test_two_temperatures_side_by_side_judged_blind_kept_on_reload_and_continued_from_b(page):
    open_section(page, "Tokens: how sure the model was")  # open: answers record their token data (mean log-prob)
    page.evaluate(RECORD_JS)
    compare(page, "Tell me about the sea.")
    page.wait_for_function(ALL_ENDED_JS, arg=2, timeout=60_000)
    draws = page.evaluate("window.compareDraws")
    assert any(len(d) == 2 and all(not ended and letters > 0 for ended, letters in d) for d in draws), draws[:20]
    assert columns_text(page).count("name hidden") == 2 and "temperature 1.2" not in columns_text(page)
    a, b = column_texts(page)
    assert a != b and page.locator("#compare-columns mark.differs").count() > 0  # the words that differ are marked
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s · mean log-prob -?[\d.]+", columns_text(page))

    page.locator("#vote-b").click()
    page.locator("#compare-columns").get_by_text("B is better").wait_for(timeout=WAIT_MS)
    assert "name hidden" not in columns_text(page) and "changes: temperature 1.2" in columns_text(page)
    page.locator("#vote-a").wait_for(state="hidden", timeout=WAIT_MS)  # locked: no second vote

    page.reload()
    message_box(page).wait_for()
    page.locator("#compare-columns").get_by_text("B is better").wait_for(timeout=WAIT_MS)
    assert column_texts(page) == [a, b] and "(locked)" in columns_text(page)

    page.locator("#continue-b").click()
    page.locator("#compare-columns").get_by_text("the chat goes on with it").wait_for(timeout=WAIT_MS)
    assert words(answers(page).last.inner_text().split("\nversion")[0]) == words(b)  # (the chat shows a tab as a space)
    send(page, "And then?")
    page.locator("#compare-columns").wait_for(state="hidden", timeout=WAIT_MS)  # the next message: no columns
    wait_done(page)
    prompt = words(shown_prompt(page))
    assert words(b) in prompt and words(a) not in prompt

    open_section(page, "⚖️ Compare side by side")  # (closed again by the reload)
    message_box(page).fill("One more?")  # a second comparison in the same chat, after a plain answer
    page.locator("#compare-send").click()
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
    assert page.locator("#compare-columns .compare-column").count() == 2 and "One more?" in page.locator('[data-testid="user"]').last.inner_text()
    page.locator("#vote-tie").click()
    page.locator("#compare-columns").get_by_text("(locked)").wait_for(timeout=WAIT_MS)

    open_section(page, "🏆 Leaderboard")
    page.locator("#leaderboard-refresh").click()
    board = page.locator("#leaderboard tbody tr")
    board.first.wait_for(timeout=WAIT_MS)
    rows = board.all_inner_texts()
    assert len(rows) == 2 and "temperature 1.2" in rows[0]  # B won a vote and tied one: first


def test_a_contender_that_cant_be_is_refused_and_the_message_stays(page):
    open_section(page, "⚖️ Compare side by side")
    page.locator("#contender-2 textarea, #contender-2 input").first.fill("temperature=9")
    message_box(page).fill("Still here?")
    page.locator("#compare-send").click()
    assert "temperature must be between 0 and 5" in toast_text(page, "temperature")
    assert message_box(page).input_value() == "Still here?" and not page.locator("#compare-columns").is_visible()
