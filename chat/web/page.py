"""The Gradio page: the chat, its versions, Instructions, Settings, Tokens, how an answer was made,
Prompt, Conversation file, and (with a store) the saved chats' sidebar.

As `gr.ChatInterface` separates rendering from wiring, `Page` lays the panels out (chat/web/panels/),
then wires them: each panel builds its own components and wires its own events, sharing the tab's
State and the page's named outputs through one `Wiring` (chat/web/wiring.py). Every browser tab gets its
own `Tab`, with its own `ChatSession`, so tabs never see each other's text.
"""

from __future__ import annotations

import random

import gradio as gr

from ..engine import Engine
from ..shelf import ModelShelf
from ..models import ModelList
from ..session import ChatSession
from ..settings import SETTINGS, GenerationSettings
from ..skill_library import SkillLibrary
from ..skills import SkillBook
from ..store.store import Store
from .panels.chat import ChatPanel, Keeping, Posting
from .panels.compare import ComparePanel, votes_of
from .panels.controls import ControlsPanel
from .panels.file import FilePanel, upload
from .panels.models import ModelsPanel
from .panels.prompt import PromptPanel
from .panels.sidebar import LISTING, Sidebar
from .panels.skills import SkillsPanel
from .panels.tokens import TokensPanel
from .panels.versions import VersionsPanel
from .tabs import Tab, Tabs
from .view import NO_ANSWER_YET, PAGE
from .wiring import Wiring

def build_ui(engine: Engine, skills: SkillBook | SkillLibrary, instructions: str, defaults: GenerationSettings, title: str = "Chat workbench",
             conversations: Store | None = None, everyone: str | None = None, seeds: random.Random | None = None,
             models: ModelList | None = None, admins: frozenset[str] = frozenset()) -> gr.Blocks:
    """The page; with `conversations` (the store), a sidebar of the user's saved chats (`everyone`: the
    user every visitor is without --auth, from app.py --user; None: each browser its own). `seeds`: where
    the tabs' sessions draw the seeds of sampled answers (by default, from the OS). `models`: the app's model
    list, `engine` its default model's engine (without a list: that engine alone). `skills`: the skills file's
    and users' own (a book alone: users' skills are kept in memory, or in `conversations` where given). `admins`: --auth
    users whose leaderboard counts everyone's votes."""
    seeds = seeds or random.Random()
    models = models or one_model(engine)
    library = skills if isinstance(skills, SkillLibrary) else SkillLibrary(skills, conversations.skills if conversations else None)

    def new_tab() -> Tab:
        tab = Tab(ChatSession(models.loaded_engine(models.default) or engine, lambda: library.book(tab.skills_owner), instructions,
                              defaults, seeds=seeds, models=models))
        return tab

    tabs = Tabs(new_tab)
    with gr.Blocks(title=title) as demo:
        page = Page(models, library, instructions, defaults, title, conversations, tabs, admins)
        page.wire(Wiring(tabs, page.state), demo, everyone)
    return demo


def one_model(engine: Engine) -> ModelList:
    """A model list of `engine` alone (a page built around one engine: tests, programs)."""
    return ModelShelf.of(engine)


class Page:
    """The panels, laid out in the order the page shows them."""

    def __init__(self, models: ModelList, library: SkillLibrary, instructions: str, defaults: GenerationSettings, title: str,
                 conversations: Store | None, tabs: Tabs, admins: frozenset[str] = frozenset()):
        self.default_instructions, self.models = instructions, models
        self.sidebar = Sidebar.build(conversations) if conversations is not None else None
        gr.Markdown(f"## 💬 {title}\n{len(models.names())} models · chats start with **{models.default}** "
                    "(the Model menu picks another for this chat; Models below shows what is loaded)")
        # A key per tab; `Tabs` holds the tab. The callback is a plain function, not the bound method `tabs.drop`:
        # Gradio deep-copies the page config (State props included) on every page load, and deep-copying a bound
        # method copies its object: every tab, every session, the model. The key is made by the tab's first
        # event, in the tab's own copy of this dict (`wiring.tab_key`). Not a callable value
        # (`gr.State(new_tab_key)`): Gradio calls that for the first event that reads it and again in a page-load
        # event of its own, whose key then replaces the first; a message sent before that load was done went to a
        # session the tab then forgot, and was never answered.
        self.state = gr.State({}, delete_callback=lambda state: tabs.drop(state.get("key")))
        self.chatbot = ChatPanel.build_chatbot()
        self.versions = VersionsPanel.build()
        self.chat = ChatPanel.build(self.chatbot, library.file_book, box_open=conversations is None, models=models)
        self.compare = ComparePanel.build(library, votes_of(conversations, admins))
        self.controls = ControlsPanel.build(instructions, defaults)
        self.models_panel = ModelsPanel.build(models)
        self.skills_panel = SkillsPanel.build(library)
        self.tokens = TokensPanel.build()
        with gr.Accordion("How this answer was made", open=False):
            self.provenance = gr.Markdown(NO_ANSWER_YET, elem_id="provenance")
        self.prompt = PromptPanel.build()
        self.file = FilePanel.build()

    def wire(self, wiring: Wiring, demo: gr.Blocks, everyone: str | None) -> None:
        """Every event of the page. The answers first: Stop, Undo, Clear, a version switch and the sidebar cancel them."""
        self._name(wiring)
        posted = self.chat.wire_answers(wiring, self.sidebar.posting() if self.sidebar is not None else Posting())
        self.compare.wire_answers(wiring, self.chat.message, self.chat.skill, self.chat.form_fields,
                                  self.sidebar.keeping() if self.sidebar is not None else Keeping())
        self.tokens.wire(wiring)
        quick = self.chat.wire_quick(wiring)
        switched, picked = self.versions.wire(wiring, self.chatbot)
        self.compare.wire(wiring, self.chat.skill)
        self.controls.wire(wiring, self.default_instructions)
        self.models_panel.wire(wiring, self.chat.model, self.chat.skill)
        self.models_panel.on_load(demo, self.chat.model, self.models)
        self.prompt.wire(wiring)
        uploading, inputs, shows = self.sidebar.uploading() if self.sidebar is not None else (upload, (), ())
        uploaded = self.file.wire(wiring, uploading, inputs, shows)
        opened = self.sidebar.wire(wiring, demo, everyone, self._chat_outputs()) if self.sidebar is not None else []
        self.skills_panel.wire(wiring, demo, self.chat.skill, opened[:1])  # (the first: the page's load, whose chats)
        self.tokens.redraw_after(wiring, [*wiring.generating, *switched, picked])
        self.file.redraw_after(wiring, [*wiring.generating, *switched, uploaded, *opened])
        self.models_panel.redraw_after(wiring, self.models)
        self.compare.redraw_after(wiring, [posted, *wiring.generating, *quick, *switched, uploaded, *opened])

    def _name(self, wiring: Wiring) -> None:
        """Registers every panel's outputs under the names handlers give them."""
        wiring.name(provenance=self.provenance, skill=self.chat.skill)
        for panel in (self.chat, self.compare, self.versions, self.controls, self.models_panel, self.skills_panel, self.tokens, self.prompt,
                      self.sidebar):
            if panel is not None:
                panel.name(wiring)

    @staticmethod
    def _chat_outputs() -> tuple[str, ...]:
        """Everything a chat sets when it is shown: the page, its instructions, skill and settings, the sidebar."""
        return (*PAGE, "instructions", "model", "skill", *(declared.name for declared in SETTINGS), *LISTING)

