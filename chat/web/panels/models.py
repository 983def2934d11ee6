"""The Models section: every model the app knows (what it is, where it comes from, its size and memory
estimate, whether it is loaded and what it uses now, as `ollama ps` shows), Load, Unload and Refresh, and
each model's defaults. The chat's own model is the Model menu beside Skill (chat panel): picking one loads
it (with a bar) and the chat goes on with it.

Handlers take the tab first; the model list is the tab's session's (`session.models`), the app's one list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gradio as gr

from ...errors import ChatError
from ...formats import FORMATS
from ...machine import available_ram, gpu_free
from ...models import ModelDefaults, ModelInfo, ModelList, Progress, size_words
from ...settings import SETTINGS, GenerationSettings
from ..handlers import apply_controls, warn
from ..models_html import CSS, models_table
from ..tabs import Tab
from ..view import PageUpdate, page
from ..wiring import QUICK, TAKING_EVENT, Wiring

MODEL_SETS = ("model", "instructions", "skill", *(declared.name for declared in SETTINGS))  # what picking a model may change


def rows(models: ModelList) -> str:
    """The table of every model (chat/web/models_html.py), its bars against the memory free now."""
    listing = models.listing()
    wheres = {info.estimate.where for info in listing if info.estimate is not None}
    return models_table(listing, _free(wheres.pop()) if len(wheres) == 1 else None)


def _free(where: str) -> int | None:
    if where == "RAM":
        return available_ram()
    gpus = gpu_free()
    return gpus[where][0] if where in gpus else None


def about(models: ModelList, name: str | None) -> str:
    """What the Models section says of the model picked there: its estimate against what is free, its state."""
    if not name or models.find(name) is None:
        return "Pick a model to see its memory estimate."
    info = next(i for i in models.listing() if i.name == models.find(name))
    lines = [f"**{info.name}** · {info.source} · `{info.location}`"]
    if info.problem:
        lines.append(f"⚠️ Can't load: {info.problem}")
    if info.estimate is not None:
        lines.append(f"Estimate: {info.estimate.words()}.")
    free = _free_words(info)
    if free:
        lines.append(free)
    if info.loaded:
        lines.append(f"Loaded: uses {size_words(info.in_use)} now" + (f", answering {info.answering}" if info.answering else "") + ".")
    defaults = models.defaults(info.name)
    if not defaults.empty:
        lines.append("Its defaults: " + "; ".join(defaults.words()) + ".")
    return "  \n".join(lines)


def _free_words(info: ModelInfo) -> str:
    if info.estimate is None:
        return ""
    if info.estimate.where == "RAM":
        free = available_ram()
        return f"Free RAM now: {size_words(free)}." if free is not None else ""
    return "Free GPU memory now: " + ", ".join(f"{device} {size_words(free)} of {size_words(total)}"
                                               for device, (free, total) in gpu_free().items()) + "."


def choose_model(tab: Tab, name: str, progress: gr.Progress = gr.Progress()) -> PageUpdate:
    """The Model menu: the chat answers with `name` from now on (loaded first, with a bar); a model that can't
    load leaves everything as it was, and says why."""
    session = tab.session
    try:
        session.use_model(name, _bar(progress, name))
    except ChatError as error:
        warn(str(error))
    shown = PageUpdate(page(tab), **chat_controls(tab), table=rows(session.models) if session.models else None)
    skill = session.models.defaults(session.model).skill if session.models is not None else None
    if skill in session.skills:  # the model's default skill, where this user has it
        shown["skill"] = gr.update(choices=session.skills.names(), value=skill)
    return shown


def chat_controls(tab: Tab) -> dict[str, Any]:
    """The chat's model, instructions and settings as the page's controls show them (MODEL_SETS but the skill)."""
    session = tab.session
    shown: dict[str, Any] = {"model": session.model, "instructions": session.instructions}
    for declared in SETTINGS:
        value = getattr(session.settings, declared.name)
        shown[declared.name] = -1 if value is None else value  # (the Seed box: -1 = random)
    return shown


def load(tab: Tab, name: str, progress: gr.Progress = gr.Progress()) -> PageUpdate:
    models = _models(tab)
    try:
        models.engine(models.find(name) or name, _bar(progress, name))
    except ChatError as error:
        warn(str(error))
    return PageUpdate(table=rows(models), about=about(models, name))


def unload(tab: Tab, name: str) -> PageUpdate:
    models = _models(tab)
    try:
        models.unload(name)
    except ChatError as error:
        warn(str(error))
    return PageUpdate(table=rows(models), about=about(models, name))


def refresh(tab: Tab, picked: str) -> PageUpdate:
    models = _models(tab)
    models.refresh()
    names = models.names()
    return PageUpdate(table=rows(models), about=about(models, picked), model=gr.update(choices=names, value=tab.session.model),
                      picked=gr.update(choices=names, value=picked if picked in names else tab.session.model))


def describe(tab: Tab, name: str) -> PageUpdate:
    models = _models(tab)
    defaults = models.defaults(name) if models.find(name) else ModelDefaults()
    return PageUpdate(about=about(models, name), stops="\n".join(defaults.stop_strings), prompt_format=defaults.prompt_format or "auto")


def save_defaults(tab: Tab, name: str, stops: str, prompt_format: str, skill: str | None, *controls: Any) -> PageUpdate:
    """The chat's instructions and the settings it changed, the stop strings, the prompt format and the chat's skill
    (unless it is the default one) become `name`'s defaults: a chat that picks it starts with them."""
    apply_controls(tab, *controls)
    session, models = tab.session, _models(tab)
    changed = {key: value for key, value in asdict(session.settings).items()
               if key != "seed" and value != getattr(GenerationSettings(), key)}
    defaults = ModelDefaults(session.instructions, changed, tuple(s for s in stops.splitlines() if s),
                             None if prompt_format in ("", "auto") else prompt_format,
                             skill if skill and skill != session.skills.default.name else None)
    try:
        models.save_defaults(name, defaults)
        gr.Info(f"Saved as {name}'s defaults: " + "; ".join(defaults.words()))
    except ChatError as error:
        warn(str(error))
    return PageUpdate(about=about(models, name))


def clear_defaults(tab: Tab, name: str) -> PageUpdate:
    models = _models(tab)
    try:
        models.save_defaults(name, ModelDefaults())
    except ChatError as error:
        warn(str(error))
    return PageUpdate(about=about(models, name), stops="", prompt_format="auto")


def _models(tab: Tab) -> ModelList:
    models = tab.session.models
    if models is None:
        raise gr.Error("this app has one model")
    return models


def _bar(progress: gr.Progress, name: str) -> Progress:
    return lambda fraction, words: progress(fraction, desc=f"Loading {name}: {words}")


@dataclass
class ModelsPanel:
    table: gr.HTML
    picked: gr.Dropdown
    about: gr.Markdown
    load: gr.Button
    unload: gr.Button
    refresh: gr.Button
    stops: gr.Textbox
    prompt_format: gr.Dropdown
    save: gr.Button
    clear: gr.Button

    @classmethod
    def build(cls, models: ModelList) -> "ModelsPanel":
        with gr.Accordion("Models", open=False, elem_id="models"):
            # (A function: drawn for each page load, not once when the page was built.)
            table = gr.HTML(lambda: rows(models), elem_id="model-table", css_template=CSS)
            with gr.Row(equal_height=True):
                picked = gr.Dropdown(models.names(), value=models.default, label="Model to load, unload or set up",
                                     scale=3, elem_id="model-picked")
                load_button = gr.Button("Load", size="sm", scale=0, min_width=80)
                unload_button = gr.Button("Unload", size="sm", scale=0, min_width=80)
                refresh_button = gr.Button("Refresh", size="sm", scale=0, min_width=80)
            about_box = gr.Markdown(lambda: about(models, models.default), elem_id="model-about")
            with gr.Accordion("This model's defaults, for everyone using this app (a chat that picks it starts with them)",
                              open=False):
                stops = gr.Textbox(label="Extra stop strings, one per line", lines=2, max_lines=6)
                prompt_format = gr.Dropdown(list(FORMATS), value="auto", label="Prompt format")
                with gr.Row():
                    save = gr.Button("Save this chat's instructions, settings and skill as its defaults (shared)", size="sm")
                    clear = gr.Button("Clear its defaults", size="sm")
        return cls(table, picked, about_box, load_button, unload_button, refresh_button, stops, prompt_format, save, clear)

    def name(self, wiring: Wiring) -> None:
        wiring.name(table=self.table, picked=self.picked, about=self.about, stops=self.stops, prompt_format=self.prompt_format)

    def wire(self, wiring: Wiring, model_menu: gr.Dropdown, skill_menu: gr.Dropdown) -> None:
        state, bind = wiring.state, wiring.bind
        chat_outputs = wiring.outputs(*wiring_page(), *MODEL_SETS, "table")
        # Queued with the messages (a message sent next goes to the model picked), with a bar while it loads.
        model_menu.input(bind(choose_model), [state, model_menu], chat_outputs, **{**TAKING_EVENT, "show_progress": "full"})
        shown = wiring.outputs("table", "about")
        self.load.click(bind(load), [state, self.picked], shown, show_progress="full", api_visibility="private")
        self.unload.click(bind(unload), [state, self.picked], shown, show_progress="hidden", api_visibility="private")
        self.refresh.click(bind(refresh), [state, self.picked], wiring.outputs("table", "about", "model", "picked"), **QUICK)
        self.picked.input(bind(describe), [state, self.picked], wiring.outputs("about", "stops", "prompt_format"), **QUICK)
        self.save.click(bind(save_defaults), [state, self.picked, self.stops, self.prompt_format, skill_menu, *wiring.controls],
                        self.about, **QUICK)
        self.clear.click(bind(clear_defaults), [state, self.picked], wiring.outputs("about", "stops", "prompt_format"), **QUICK)

    def on_load(self, demo: gr.Blocks, model_menu: gr.Dropdown, models: ModelList) -> None:
        """Each page load: both menus list the models as they are now (a Refresh in another tab may have found more)."""
        demo.load(lambda: (gr.update(choices=models.names()), gr.update(choices=models.names())), None, [model_menu, self.picked],
                  **QUICK)

    def redraw_after(self, wiring: Wiring, models: ModelList) -> None:
        """After each answer: the table again (what is loaded, answering, and what each uses)."""
        for event in wiring.generating:
            event.then(lambda: rows(models), None, self.table, **QUICK)


def wiring_page() -> tuple[str, ...]:
    from ..view import PAGE

    return PAGE
