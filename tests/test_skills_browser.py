"""Skills on the page, in real Chromium against app.py with two --auth users and a SQLite store: write a skill with a
variable, Try it, Save it (a broken template saves nothing), use it from the menu and as a /command, reload; edit it
to version 2 and Reproduce an answer of version 1; Export, and Import into the other user, who never saw it before.
And attached text: summarized with /summarize; a file larger than the window is refused with the numbers."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.apps import AppProcess
from tests.helpers.browser import (answers, chromium, message_box, open_section, questions, send, toast_text, upload_input,
                                   wait_done)
from tests.helpers.waiting import wait_for

WAIT_MS = 30_000
FLAGS = ["--temperature", "0", "--max-new-tokens", "6"]
ACCOUNTS = {"ada": "ada-secret-1", "bob": "bob-secret-2"}
NAME = "🌍 Translate to"
VARIABLES = "language: {type: choice, choices: [German, French], default: French, required: true}"
TEMPLATE = "Translate the text between the fences into {language}.\n\n```\n{message}\n```\n"


def logged_in(browser, url: str, user: str):
    context = browser.new_context(viewport={"width": 1200, "height": 1600}, accept_downloads=True)
    assert context.request.post(url + "login", form={"username": user, "password": ACCOUNTS[user]}).ok
    page = context.new_page()
    page.goto(url)
    message_box(page).wait_for(timeout=WAIT_MS)
    return page


def box(page, name: str):
    return page.locator(f"#skill-{name} textarea, #skill-{name} input").first


def said(page, words: str) -> str:
    """What the Skills section says, once it says `words`."""
    page.locator("#skill-said").filter(has_text=words).wait_for(timeout=WAIT_MS)
    return page.locator("#skill-said").inner_text()


def open_menu(page, elem_id: str) -> None:
    """Opens the menu (a Gradio dropdown) as a person does: a click, or the arrow key where the click only focused it
    (a menu left focused, closed by Escape, opens on a key)."""
    page.bring_to_front()
    menu = page.locator(f"#{elem_id} input")
    menu.click()
    if menu.get_attribute("aria-expanded") != "true":
        menu.press("ArrowDown")
    page.locator(f"#{elem_id}").get_by_role("option").first.wait_for(timeout=WAIT_MS)


def skill_menu(page) -> list[str]:
    """The Skill menu's options, as a person sees them: opened, read, closed."""
    open_menu(page, "skill")
    options = page.locator("#skill").get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [option.replace("✓", "").strip() for option in options]


def pick(page, elem_id: str, option: str) -> None:
    open_menu(page, elem_id)
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()


def chat_once(page, text: str) -> None:
    before = answers(page).count()
    send(page, text)
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"bot\"]').length > {before}", timeout=WAIT_MS)
    wait_done(page, WAIT_MS)


def test_a_skill_is_written_tried_saved_used_versioned_and_shared_by_export(tmp_path, tiny_chat_dir):
    accounts = [arg for user, password in ACCOUNTS.items() for arg in ("--auth", f"{user}:{password}")]
    with AppProcess("--model", str(tiny_chat_dir), "--db", str(tmp_path / "chats.sqlite3"), *accounts, *FLAGS) as app, \
            chromium() as browser:
        app.wait_for_line("running at")
        page, other_tab = logged_in(browser, app.url, "ada"), logged_in(browser, app.url, "ada")
        open_section(page, "Skills")
        box(page, "name").fill(NAME)
        box(page, "variables").fill(VARIABLES)
        box(page, "template").fill("Translate into {language}, with no placeholder for the text.")
        page.get_by_role("button", name="Save", exact=True).click()
        assert "⚠️ Template: template has no {message} placeholder" in said(page, "nothing was saved")
        assert NAME not in skill_menu(page)

        box(page, "template").fill(TEMPLATE)
        box(page, "sample").fill("Good morning")
        box(page, "sample-values").fill("language: German")
        page.get_by_role("button", name="Show prompt").click()
        page.locator("#skill-trial-prompt").filter(has_text="your text").wait_for(timeout=WAIT_MS)
        assert "skill template" in page.locator("#skill-trial-prompt").inner_text()  # tokens per part
        page.get_by_role("button", name="Try", exact=True).click()
        page.locator("#skill-trial-answer").filter(has_text="stop:").wait_for(timeout=WAIT_MS)
        assert questions(page).count() == 0  # Try answers apart: the chat is as it was

        box(page, "note").fill("first")
        page.get_by_role("button", name="Save", exact=True).click()
        said(page, f"Saved {NAME}, version 1")
        assert NAME in skill_menu(page)
        # The owner's other tab: its menu gets the skill by itself (the page looks every few seconds).
        assert wait_for(lambda: NAME in skill_menu(other_tab), WAIT_MS / 1000, interval_s=0.5), skill_menu(other_tab)

        pick(page, "skill", NAME)
        page.locator("#skill-values").wait_for(timeout=WAIT_MS)  # the variable's form, beside the message box
        pick(page, "skill-choice-1", "German")
        chat_once(page, "Good morning")
        chat_once(page, "/translate-to Hello friend")  # the command: the skill, its variable's default
        shown = questions(page).all_inner_texts()
        assert f"{NAME} (language: German): Good morning" in shown[0] and f"{NAME} (language: French): Hello friend" in shown[1]

        page.reload()
        message_box(page).wait_for(timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"user\"]').length == 2", timeout=WAIT_MS)
        assert f"{NAME} (language: French): Hello friend" in questions(page).all_inner_texts()[1]
        page.wait_for_function("(name) => document.querySelector('#skill input').value === name", arg=NAME, timeout=WAIT_MS)

        open_section(page, "Skills")
        pick(page, "skills-picked", f"{NAME} · yours, v1")
        page.locator("#skill-where").filter(has_text="Yours · version 1").wait_for(timeout=WAIT_MS)  # (its boxes are filled)
        box(page, "template").fill(TEMPLATE.replace("Translate the text", "Please translate the text"))
        box(page, "note").fill("politer")
        page.get_by_role("button", name="Save", exact=True).click()
        said(page, f"Saved {NAME}, version 2")
        page.get_by_role("button", name="Reproduce").click()
        wait_done(page, WAIT_MS)
        open_section(page, "How this answer was made")
        panel = page.locator("#provenance")
        panel.filter(has_text="Reproduces version 1").wait_for(timeout=WAIT_MS)
        assert f"{NAME} · version 1 (it is at version 2 now: Reproduce uses version 1) · language: French" in panel.inner_text()
        assert "Please translate" not in panel.inner_text()  # version 1's prompt

        with page.expect_download() as download:
            page.locator("#skills-export").click()
        exported = tmp_path / "exported.yaml"
        download.value.save_as(exported)
        assert "Please translate the text" in exported.read_text(encoding="utf-8")

        bob = logged_in(browser, app.url, "bob")
        assert NAME not in skill_menu(bob)  # ada's skills are ada's
        open_section(bob, "Skills")
        upload_input(bob, "skills-import").set_input_files(str(exported))
        said(bob, f"Imported 1 skills: {NAME}")
        assert NAME in skill_menu(bob)
        pick(bob, "skills-picked", f"{NAME} · yours, v1")
        bob.locator("#skill-where").filter(has_text="Yours · version 1").wait_for(timeout=WAIT_MS)
        assert box(bob, "template").input_value() == TEMPLATE.replace("Translate the text", "Please translate the text")
        assert box(bob, "variables").input_value() == VARIABLES


def test_an_attached_file_is_summarized_and_one_too_large_for_the_window_is_refused_with_the_numbers(tmp_path, tiny_chat_dir):
    notes, big = tmp_path / "notes.md", tmp_path / "big.txt"
    notes.write_text("# Notes\n\nThe meeting moved to Friday. Bring the slides.\n", encoding="utf-8")
    big.write_text("word " * 3000, encoding="utf-8")
    with AppProcess("--model", str(tiny_chat_dir), "--db", "none", *FLAGS) as app, chromium() as browser:
        app.wait_for_line("running at")
        page = browser.new_context(viewport={"width": 1200, "height": 1400}).new_page()
        page.goto(app.url)
        message_box(page).wait_for(timeout=WAIT_MS)
        attach(page, notes)
        chat_once(page, "/summarize")
        assert questions(page).all_inner_texts()[0].strip().startswith("💎 Summarize: 📎 notes.md")
        page.wait_for_function("() => !document.querySelector('#attach')?.innerText.includes('notes.md')", timeout=WAIT_MS)
        attach(page, big)
        send(page, "/summarize")
        warning = toast_text(page, "does not fit")
        assert "big.txt does not fit: with it the prompt would be" in warning and "512-token context" in warning
        assert message_box(page).input_value() == "/summarize" and questions(page).count() == 1  # nothing sent, nothing lost


def attach(page, path: Path) -> None:
    page.locator("#attach input[type=file]").set_input_files(str(path))
    page.locator("#attach").filter(has_text=path.name).wait_for(timeout=WAIT_MS)
