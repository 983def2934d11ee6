"""Real headless Chromium (Debian's, driven by Playwright) on the app's page: launch it, open a tab,
type and send, read the chat, the prompt and the toasts, upload a conversation file.
The `browser` fixture (tests/conftest.py) launches one per test module."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
WAIT_MS = 20_000


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium, closed afterwards; skips where Playwright is missing, fails where Chromium is."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_tab(browser, url: str) -> Iterator[Any]:
    """A fresh browser context (its own cookies, its own session) on the app, ready to type in."""
    context = browser.new_context(viewport={"width": 1200, "height": 1100})
    try:
        page = context.new_page()
        page.goto(url)
        message_box(page).wait_for()
        yield page
    finally:
        context.close()


def message_box(page):
    return page.get_by_role("textbox", name="Message", exact=True)


def answers(page):
    return page.locator('[data-testid="bot"]')


def questions(page):
    return page.locator('[data-testid="user"]')


def send(page, text: str) -> None:
    """Types `text` into the message box at once and presses Enter."""
    message_box(page).fill(text)
    message_box(page).press("Enter")


def wait_done(page, timeout_ms: int = 60_000) -> None:
    """Until the status line shows a finished answer's figures."""
    page.wait_for_function("() => (document.querySelector('#status')?.innerText || '').includes('stop:')", timeout=timeout_ms)


def open_section(page, label: str) -> None:
    """Clicks the header of the page's collapsible section titled `label` (Settings, Prompt, Instructions ...):
    open if closed, closed if open. A section it opens is ready to type in when it returns.

    The header itself, not the first text `label` on the page: while the page is still rendering, the
    footer's own "Settings" button can be the only one there, and clicking it opens Gradio's settings.
    Gradio renders a closed section's controls when it first opens, and once they are there (an animation
    frame later, at most two) sets them to their initial values again: a value typed in between is lost
    (Max new tokens 4,000 went back to the app's 150). So: wait for the controls, then for two frames.
    """
    header = page.locator(".label-wrap").filter(has=page.get_by_text(label, exact=True))
    opening = "open" not in (header.get_attribute("class") or "").split()
    header.click()
    if opening:
        header.locator("xpath=..").locator("[data-testid=accordion-content] > * > *").first.wait_for()
        page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def shown_prompt(page) -> str:
    """The exact prompt of the last turn, from the Prompt section (opened if it is closed)."""
    if not page.locator("#prompt-view textarea").is_visible():
        open_section(page, "Prompt")
    return page.locator("#prompt-view textarea").input_value()


def set_max_new_tokens(page, value: int) -> None:
    """Opens Settings and sets Max new tokens, as a person does: type the number, press Enter."""
    open_section(page, "Settings")
    page.get_by_label("Max new tokens").last.fill(str(value))
    page.get_by_label("Max new tokens").last.press("Enter")


def upload_conversation(page, path: Path) -> None:
    """Through the page's own 'Upload conversation (JSON)' button in the Conversation file section."""
    upload = upload_input(page, "upload-conversation")
    if not upload.count():
        open_section(page, "Conversation file")
    upload.set_input_files(str(path))


def upload_input(page, button_id: str):
    """The file input of the UploadButton `button_id` (Gradio puts it beside the button, not in it)."""
    return page.locator(f"#{button_id}").locator("xpath=..").locator("input[type=file]")


def write_conversation(folder: Path, messages: Any, name: str = "conversation.json") -> Path:
    """A conversation file in `folder`: `messages` as JSON, or a string written as it is."""
    path = folder / name
    path.write_text(messages if isinstance(messages, str) else json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    return path


def toast_text(page, words: str) -> str:
    """The text of the warning toast that contains `words` (waits for it to appear)."""
    toast = page.get_by_test_id("toast-body").filter(has_text=words).first
    toast.wait_for(timeout=WAIT_MS)
    return toast.inner_text()
