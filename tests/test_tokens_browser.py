"""The token view in real headless Chromium (tiny model, the app as app.py runs it, a real SQLite store):
open the panel, see an answer's tokens shaded with their alternatives, take another token and get a new
version that goes on from it; the tokens come back from the store after a reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.settings import GenerationSettings
from chat.store.store import Store
from tests.helpers.apps import running_app
from tests.helpers.browser import WAIT_MS, answers, open_section, open_tab, send, wait_done
from tests.helpers.engines import make_engine

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
STATUS_JS = "(document.querySelector('#status [data-testid=\"markdown\"]')?.innerText || '')"


@pytest.fixture(scope="module")
def app(tiny_chat_dir, tmp_path_factory):
    engine = make_engine(tiny_chat_dir, batching=True, endless=True)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'chats.sqlite3'}")
    with running_app(engine, GenerationSettings(max_new_tokens=12, temperature=1.0), conversations=store) as (demo, url):
        yield url


@pytest.fixture
def page(browser, app):
    with open_tab(browser, app) as page:
        yield page


def chips(page):
    return page.locator("#token-view button.tok")


def test_pick_an_alternative_token_and_a_new_version_goes_on_from_it(page):
    open_section(page, "Tokens: how sure the model was")  # recording starts with the panel open
    send(page, "Hello")
    wait_done(page)
    chips(page).first.wait_for(timeout=WAIT_MS)
    shown = chips(page).all_inner_texts()
    assert len(shown) == 12  # every token of the answer (it runs to its limit)
    assert "%" in chips(page).first.get_attribute("title")  # hover: its probability and the likeliest others

    chips(page).nth(3).click()  # the fourth token: its alternatives
    page.locator("#token-details .bars").wait_for(timeout=WAIT_MS)
    assert page.locator("#token-details").inner_text().startswith("Token 4:")
    options = page.locator("#token-alternatives label")
    assert options.count() >= 5
    choice = options.filter(has_not_text="ends the answer").first
    label = choice.inner_text()
    alternative = label[label.index("«") + 1 : label.index("»")].replace("␣", " ").replace("⏎", "\n")
    choice.click()
    page.get_by_role("button", name="Continue from this token").click()
    page.wait_for_function(f"() => {STATUS_JS}.includes('stop:') && "
                           "(document.querySelector('#versions')?.innerText || '').includes('2 / 2')", timeout=60_000)
    open_section(page, "How this answer was made")
    assert "Began with a token you chose: token 4 of version 1" in page.locator("#provenance").inner_text()
    # The new version's own tokens: the same first three, the chosen one, then the model's.
    chips(page).nth(4).wait_for(timeout=WAIT_MS)
    now = [chips(page).nth(i).inner_text() for i in range(4)]
    assert now[:3] == shown[:3] and now[3].replace("␣", " ").replace("⏎", "\n") == alternative
    page.screenshot(path=str(ARTIFACTS / "token-view.png"), full_page=True)

    # A reload: the chat comes back from the store, and so do the shown version's tokens.
    page.reload()
    page.wait_for_function("() => !document.querySelector('#message textarea')?.disabled", timeout=WAIT_MS)
    open_section(page, "Tokens: how sure the model was")
    chips(page).nth(4).wait_for(timeout=WAIT_MS)
    assert [chips(page).nth(i).inner_text() for i in range(4)] == now


def test_a_closed_panel_records_nothing_and_says_so(page):
    send(page, "Hi there")
    wait_done(page)
    open_section(page, "Tokens: how sure the model was")
    page.wait_for_function("() => (document.querySelector('#token-view')?.innerText || '').includes('closed')", timeout=WAIT_MS)
    assert chips(page).count() == 0


def test_the_prompt_shows_as_tokens_with_its_parts(page):
    send(page, "Hello there")
    wait_done(page)
    open_section(page, "Prompt")
    page.get_by_label("Show as tokens: each piece and id, coloured by part").check()
    page.locator("#prompt-tokens .pt-tok").first.wait_for(timeout=WAIT_MS)
    view = page.locator("#prompt-tokens").inner_text()
    for part in ("instructions", "your text", "generation prompt"):
        assert part in view
    specials = page.locator("#prompt-tokens .pt-tokens .pt-tok.special")  # (not the legend's sample)
    assert specials.count() >= 4 and "<|im_start|>" in specials.first.inner_text()
