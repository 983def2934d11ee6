"""The Skills section: the skills file's skills (read-only: Duplicate copies one) and the user's own, written,
tried and saved here, each Save a version; Delete with undo, an old version brought back, Export and Import
in the skills file's format. A saved skill is in the Skill menu of every tab of its owner (a timer redraws
the menus when the owner's skills change), in the terminal and in the API.

Handlers take the library first (`SkillLibrary`, the app's one), then the tab; whose skills they are is the
tab's (`Tab.skills_owner`): the same owner as the chats.
"""

from __future__ import annotations

import html
import re
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import yaml

from ...errors import ChatError, SkillError
from ...skill_editor import LABELS, SkillFields, empty
from ...skill_library import SkillLibrary
from ...skills import Skill
from ..prompt_tokens_html import CSS, tokens_html
from ..tabs import Tab
from ..view import Pages, PageUpdate
from ..wiring import GENERATE, QUICK, TAKING_EVENT, Wiring

BOXES = tuple(f"skill_{key}" for key in LABELS)  # the editor's boxes, by the names handlers show them under
EDITOR = ("skills_picked", *BOXES, "skill_where", "skill_said", "skill_versions", "skills_export")
REFRESH_S = 3.0  # how often an open page looks whether its owner's skills changed (in another tab)
FILE_NOTE = "From the skills file: read-only here. **Duplicate** makes a copy of your own to edit."
NEW_NOTE = "A new skill of your own: **Save** keeps it (each Save is a version), and it joins the Skill menu."
SAMPLE = "The quick brown fox jumps over the lazy dog."
DOWNLOADS = "chat-workbench-downloads"  # (the conversation files' folder: chat/web/panels/file.py)
UNCHANGED = PageUpdate(skill_said=gr.skip())  # (an empty update would read as one value for the first output)


# -- what the section shows ----------------------------------------------------------------------------


def menus(library: SkillLibrary, tab: Tab, chat_skill: str | None = None, picked: str | None = None) -> PageUpdate:
    """The Skill menu beside the message box and the section's list, as the owner's skills are now."""
    book = library.book(tab.skills_owner)
    owned = {saved.name: saved.version for saved in library.owned(tab.skills_owner)}
    before = tab.skills_shown or _signature(library.file_book)  # (a new tab's menu: the file's, as the page was built)
    tab.skills_shown = _signature(book)
    labels = [(f"{skill.name} · yours, v{owned[skill.name]}" if skill.name in owned else f"{skill.name} · skills file", skill.name)
              for skill in book]
    # The menu's value is left alone unless its skill is gone (deleted): this may be drawn just after the page's load
    # set the chat's skill, with the value the menu had before it.
    chat_menu = gr.update(choices=book.names()) if chat_skill in book else gr.update(choices=book.names(), value=book.default.name)
    if chat_skill in book and tab.skills_shown == before:
        chat_menu = gr.skip()  # as it is: a page just loaded is not redrawn under the user's first keystrokes
    return PageUpdate(skill=chat_menu, skills_picked=gr.update(choices=labels, value=picked if picked in book else None),
                      skills_export=export_file(library, tab))  # (written again only when the owner's skills may have changed)


def _signature(book: Any) -> tuple[str, ...]:
    return tuple(f"{skill.name}@{skill.version}" for skill in book)


def editor(library: SkillLibrary, tab: Tab, name: str | None, fields: SkillFields | None = None, said: str = "") -> PageUpdate:
    """The editor showing the skill `name` (None: a new one, `fields` in its boxes), its versions, and `said`."""
    owner = tab.skills_owner
    skill = library.book(owner).find(name) if name else None
    own = name is not None and library.is_owned(owner, name)
    shown = fields or (SkillFields.of(skill) if skill is not None else empty())
    boxes = {box: gr.update(value=value, interactive=skill is None or own) for box, value in zip(BOXES, shown.values())}
    versions = library.versions(owner, name) if own and name else []
    if skill is None:
        where = NEW_NOTE
    elif own:
        where = f"Yours · version {skill.version} (of {len(versions)}): edit and **Save** for version {len(versions) + 1}."
    else:
        where = FILE_NOTE
    choices = [(f"v{saved.version} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(saved.saved_at))}"
                + (f" · {saved.note}" if saved.note else ""), saved.version) for saved in versions]
    return PageUpdate(**boxes, skill_where=where, skill_said=said,
                      skill_versions=gr.update(choices=choices, value=choices[0][1] if choices else None, visible=bool(choices)))


def export_file(library: SkillLibrary, tab: Tab) -> str | None:
    """The owner's skills written as a skills file for the Export button (None: they have none)."""
    if not library.owned(tab.skills_owner):
        return None
    folder = Path(tempfile.gettempdir()) / DOWNLOADS
    folder.mkdir(exist_ok=True)
    path = folder / f"skills-{time.strftime('%Y%m%d-%H%M%S')}-{id(tab):x}.yaml"
    path.write_text(library.export(tab.skills_owner), encoding="utf-8")
    return str(path)


def _ok(text: str) -> str:
    return f"✅ {html.escape(text, quote=False)}"


def _refused(error: ChatError, nothing: str = "nothing was saved") -> str:
    return f"⚠️ {html.escape(str(error), quote=False)} ({nothing})"


# -- handlers ------------------------------------------------------------------------------------------


def load(library: SkillLibrary, tab: Tab, chat_skill: str | None) -> PageUpdate:
    """On page load: the menus (the boxes are left as they are: the user may have begun typing in them)."""
    return redraw_menus(library, tab, chat_skill, None)


def redraw_menus(library: SkillLibrary, tab: Tab, chat_skill: str | None, picked: str | None) -> PageUpdate:
    """After the page learnt whose chats these are (the saved chats' load): the menus, the owner's skills in them."""
    return menus(library, tab, chat_skill, picked)


def refresh(library: SkillLibrary, tab: Tab, chat_skill: str | None, picked: str | None) -> Any:
    """The timer: the menus again when the owner's skills changed (saved in another tab); else nothing."""
    if _signature(library.book(tab.skills_owner)) == tab.skills_shown:
        return UNCHANGED
    return menus(library, tab, chat_skill, picked)


def pick(library: SkillLibrary, tab: Tab, name: str | None) -> PageUpdate:
    return editor(library, tab, name) if name else UNCHANGED


def new(library: SkillLibrary, tab: Tab) -> PageUpdate:
    return PageUpdate(skills_picked=gr.update(value=None), **editor(library, tab, None))


def duplicate(library: SkillLibrary, tab: Tab, picked: str | None, *boxes: str) -> PageUpdate:
    """A copy of the skill shown (its boxes as they are) under a free name, as a new skill of the user's."""
    fields = SkillFields(*boxes)
    names = set(library.book(tab.skills_owner).names())
    base = re.sub(r" \(copy( \d+)?\)$", "", fields.name.strip()) or "My skill"
    name = next(candidate for number in range(1, 1000)
                if (candidate := f"{base} (copy)" if number == 1 else f"{base} (copy {number})") not in names)
    copy = SkillFields(name, "", *fields.values()[2:])
    return PageUpdate(skills_picked=gr.update(value=None),
                      **editor(library, tab, None, copy, _ok(f"A copy of {picked or base}: edit it, then Save.")))


def save(library: SkillLibrary, tab: Tab, chat_skill: str | None, picked: str | None, note: str, *boxes: str) -> PageUpdate:
    """Saves the boxes as a skill of the user's (the one picked, if it is theirs: its next version)."""
    owner = tab.skills_owner
    try:
        skill = SkillFields(*boxes).skill()
        replacing = picked if picked and library.is_owned(owner, picked) else None
        saved = library.save(owner, skill, note or "", replacing)
    except SkillError as error:
        return PageUpdate(skill_said=_refused(error))
    said = _ok(f"Saved {saved.name}, version {saved.version}: in the Skill menu, and /{saved.command} uses it.")
    return PageUpdate(menus(library, tab, chat_skill, saved.name), skill_note="", **editor(library, tab, saved.name, said=said))


def delete(library: SkillLibrary, tab: Tab, chat_skill: str | None, picked: str | None) -> PageUpdate:
    try:
        tab.deleted_skill = library.delete(tab.skills_owner, picked or "")
    except SkillError as error:
        return PageUpdate(skill_said=_refused(error, "nothing was deleted"))
    return PageUpdate(menus(library, tab, chat_skill), skills_undo=gr.update(visible=True),
                      **editor(library, tab, None, said=_ok(f"Deleted {picked}. Undo delete brings it back.")))


def undo_delete(library: SkillLibrary, tab: Tab, chat_skill: str | None) -> PageUpdate:
    if tab.deleted_skill is None:
        return PageUpdate(skills_undo=gr.update(visible=False))
    library.restore(tab.skills_owner, tab.deleted_skill)
    restored = next((saved.name for saved in library.owned(tab.skills_owner) if saved.id == tab.deleted_skill), None)
    tab.deleted_skill = None
    return PageUpdate(menus(library, tab, chat_skill, restored), skills_undo=gr.update(visible=False),
                      **editor(library, tab, restored, said=_ok(f"{restored} is back.")))


def bring_back(library: SkillLibrary, tab: Tab, chat_skill: str | None, picked: str | None, version: Any) -> PageUpdate:
    try:
        skill = library.bring_back(tab.skills_owner, picked or "", int(version))
    except (SkillError, TypeError, ValueError) as error:
        return PageUpdate(skill_said=_refused(SkillError(f"pick a version to bring back ({error})")
                                              if not isinstance(error, SkillError) else error))
    said = _ok(f"Version {version} of {skill.name} is back, saved as version {skill.version}.")
    return PageUpdate(menus(library, tab, chat_skill, skill.name), **editor(library, tab, skill.name, said=said))


def import_file(library: SkillLibrary, tab: Tab, chat_skill: str | None, file: Any) -> PageUpdate:
    """Imports a skills file's skills as the user's (all or none: an error names the file's line)."""
    path = Path(getattr(file, "name", file) or "")
    try:
        text = path.read_text(encoding="utf-8-sig")
        imported = library.import_text(tab.skills_owner, text, path.name)
    except SkillError as error:
        return PageUpdate(skill_said=_refused(error, "nothing was imported"))
    except (OSError, UnicodeDecodeError) as error:
        return PageUpdate(skill_said=_refused(SkillError(f"{path.name}: can't read it as UTF-8 text ({error})"),
                                              "nothing was imported"))
    names = ", ".join(skill.name for skill in imported)
    last = imported[-1].name if imported else None
    return PageUpdate(menus(library, tab, chat_skill, last),
                      **editor(library, tab, last, said=_ok(f"Imported {len(imported)} skills: {names}.")))


def sample_values(text: str) -> dict[str, str]:
    """The Try section's values box (`language: French`, a line each) as the variables' values."""
    if not (text or "").strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise SkillError("Sample values: write one per line, such as language: French")
    return {str(name): "" if value is None else str(value) for name, value in data.items()}


def show_prompt(tab: Tab, sample: str, values: str, *boxes: str) -> PageUpdate:
    """The exact prompt the boxes' skill gives the sample, token by token, coloured by part (the Prompt view's)."""
    try:
        skill = SkillFields(*boxes).skill()
        fitted = tab.session.trial_prompt(skill, sample or SAMPLE, sample_values(values))
    except ChatError as error:
        return PageUpdate(skill_trial_prompt=f"<p>{_refused(error, 'nothing was sent')}</p>")
    engine = tab.session.engine
    tokens = engine.prompt_tokens(fitted, sample or SAMPLE) if engine.exact_prompt else None
    if tokens is None:
        return PageUpdate(skill_trial_prompt=f"<pre>{html.escape(fitted.prompt.text)}</pre>")
    return PageUpdate(skill_trial_prompt=tokens_html(tokens))


def try_skill(tab: Tab, sample: str, values: str, *boxes: str) -> Pages:
    """The boxes' skill answers the sample in the scratch area (the chat is left as it is)."""
    shown = show_prompt(tab, sample, values, *boxes)
    yield PageUpdate(shown, skill_trial_answer="…")
    try:
        generation = tab.session.trial(SkillFields(*boxes).skill(), sample or SAMPLE, sample_values(values))
    except ChatError as error:
        yield PageUpdate(skill_trial_answer=_refused(error, "nothing was sent"))
        return
    tab.trial = generation
    text = ""
    try:
        for delta in generation:
            text += delta
            yield PageUpdate(skill_trial_answer=html.escape(text, quote=False))
        yield PageUpdate(skill_trial_answer=html.escape(text, quote=False) + f"\n\n*{generation.stats.summary()}*")
    except ChatError as error:
        yield PageUpdate(skill_trial_answer=html.escape(text, quote=False) + f"\n\n{_refused(error, 'the chat is as it was')}")
    finally:
        generation.close()
        tab.trial = None


def stop_trial(tab: Tab) -> None:
    if tab.trial is not None:
        tab.trial.cancel()


# -- the section -----------------------------------------------------------------------------------------


@dataclass
class SkillsPanel:
    library: SkillLibrary
    picked: gr.Dropdown
    new: gr.Button
    duplicate: gr.Button
    delete: gr.Button
    undo: gr.Button
    where: gr.Markdown
    boxes: list[gr.Textbox]
    note: gr.Textbox
    save: gr.Button
    said: gr.Markdown
    versions: gr.Dropdown
    bring_back: gr.Button
    sample: gr.Textbox
    values: gr.Textbox
    show_prompt: gr.Button
    try_it: gr.Button
    stop_try: gr.Button
    trial_prompt: gr.HTML
    trial_answer: gr.Markdown
    export: gr.DownloadButton
    import_button: gr.UploadButton
    timer: gr.Timer

    @classmethod
    def build(cls, library: SkillLibrary) -> "SkillsPanel":
        with gr.Accordion("Skills", open=False, elem_id="skills"):
            with gr.Row(equal_height=True):
                picked = gr.Dropdown([], value=None, label="Skill to edit", scale=3, elem_id="skills-picked")
                new = gr.Button("New skill", size="sm", scale=0, min_width=110)
                duplicate = gr.Button("Duplicate", size="sm", scale=0, min_width=100)
                delete = gr.Button("Delete", size="sm", variant="stop", scale=0, min_width=90)
                undo = gr.Button("Undo delete", size="sm", visible=False, scale=0, min_width=110)
            where = gr.Markdown(NEW_NOTE, elem_id="skill-where")
            with gr.Row():
                name = gr.Textbox(label="Name", elem_id="skill-name", placeholder="🧪 My skill", scale=2)
                command = gr.Textbox(label="Command", elem_id="skill-command", scale=1,
                                     placeholder="from the name (🧪 My skill: /my-skill)")
                description = gr.Textbox(label="Description", elem_id="skill-description", scale=3)
            template = gr.Textbox("{message}", label="Template", info="{message} is where the user's text goes; {language}, "
                                  "the value of a variable called language", lines=6, max_lines=20, elem_id="skill-template")
            variables = gr.Textbox(label="Variables (a line each, as in the skills file)", lines=2, elem_id="skill-variables",
                                   placeholder="language: {type: choice, choices: [German, French], default: German, required: true}")
            with gr.Row():
                settings = gr.Textbox(label="Settings (a line each)", lines=2, elem_id="skill-settings",
                                      placeholder="temperature: 0.2")
                stop = gr.Textbox(label="Stop strings (a list)", lines=2, elem_id="skill-stop", placeholder='["###", "\\n\\n"]')
            with gr.Row(equal_height=True):
                note = gr.Textbox(label="Version note (optional)", elem_id="skill-note", scale=3)
                save = gr.Button("Save", variant="primary", scale=0, min_width=90)
            said = gr.Markdown("", elem_id="skill-said")
            with gr.Row(equal_height=True):
                versions = gr.Dropdown([], label="Versions", visible=False, elem_id="skill-versions", scale=3)
                bring_back = gr.Button("Bring back", size="sm", scale=0, min_width=110)
            gr.Markdown("**Try it** (as the first message of a chat with these instructions; the chat is left as it is)")
            with gr.Row():
                sample = gr.Textbox(label="Sample input", placeholder=SAMPLE, lines=2, scale=3, elem_id="skill-sample")
                values = gr.Textbox(label="Sample values (a line each)", placeholder="language: French", lines=2, scale=2,
                                    elem_id="skill-sample-values")
            with gr.Row():
                show_prompt_button = gr.Button("Show prompt", size="sm")
                try_it = gr.Button("Try", size="sm", variant="primary")
                stop_try = gr.Button("Stop", size="sm", variant="stop")
            trial_prompt = gr.HTML("", elem_id="skill-trial-prompt", css_template=CSS)
            trial_answer = gr.Markdown("", elem_id="skill-trial-answer")
            with gr.Row():
                export = gr.DownloadButton("Export my skills", size="sm", value=None, elem_id="skills-export")
                import_button = gr.UploadButton("Import skills file", file_types=[".yaml", ".yml", ".txt"], size="sm",
                                                elem_id="skills-import")
        timer = gr.Timer(REFRESH_S)  # (outside the section: a closed section's components are not on the page, nor its timer)
        return cls(library, picked, new, duplicate, delete, undo, where,
                   [name, command, description, variables, template, settings, stop], note, save, said, versions, bring_back,
                   sample, values, show_prompt_button, try_it, stop_try, trial_prompt, trial_answer, export, import_button, timer)

    def name(self, wiring: Wiring) -> None:
        wiring.name(skills_picked=self.picked, skill_where=self.where, skill_said=self.said, skill_versions=self.versions,
                    skills_export=self.export, skills_undo=self.undo, skill_note=self.note,
                    skill_trial_prompt=self.trial_prompt, skill_trial_answer=self.trial_answer,
                    **dict(zip(BOXES, self.boxes)))

    def wire(self, wiring: Wiring, demo: Any, chat_skill: gr.Dropdown, after: list[Any]) -> None:
        """The section's events. `after`: events that may change whose skills these are (the page's load with saved chats):
        the menus are drawn again after them."""
        state, bind, on = wiring.state, wiring.bind, self._on
        shows = wiring.outputs("skill", *EDITOR, "skills_undo", "skill_note")
        boxes = self.boxes
        demo.load(bind(on(load)), [state, chat_skill], shows, **QUICK)
        for event in after:
            event.then(bind(on(redraw_menus)), [state, chat_skill, self.picked], shows, **QUICK)
        self.timer.tick(bind(on(refresh)), [state, chat_skill, self.picked], shows, **QUICK)
        self.picked.input(bind(on(pick)), [state, self.picked], shows, **QUICK)
        self.new.click(bind(on(new)), state, shows, **QUICK)
        self.duplicate.click(bind(on(duplicate)), [state, self.picked, *boxes], shows, **QUICK)
        # Queued (TAKING_EVENT): a save, a delete, an import change the store, in the order the user asked.
        self.save.click(bind(on(save)), [state, chat_skill, self.picked, self.note, *boxes], shows, **TAKING_EVENT)
        self.delete.click(bind(on(delete)), [state, chat_skill, self.picked], shows, **TAKING_EVENT)
        self.undo.click(bind(on(undo_delete)), [state, chat_skill], shows, **TAKING_EVENT)
        self.bring_back.click(bind(on(bring_back)), [state, chat_skill, self.picked, self.versions], shows, **TAKING_EVENT)
        self.import_button.upload(bind(on(import_file)), [state, chat_skill, self.import_button], shows, **TAKING_EVENT)
        self.show_prompt.click(bind(show_prompt), [state, self.sample, self.values, *boxes],
                               wiring.outputs("skill_trial_prompt"), **QUICK)
        trying = self.try_it.click(wiring.bind_stream(try_skill), [state, self.sample, self.values, *boxes],
                                   [*wiring.outputs("skill_trial_prompt", "skill_trial_answer"), state], concurrency_id=GENERATE,
                                   show_progress="minimal", api_visibility="private")
        self.stop_try.click(bind(stop_trial), state, None, cancels=[trying], **QUICK)

    def _on(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        return partial(handler, self.library)
