"""The Instructions and Settings sections: the system instructions (with Reset to default), and one control
per sampling setting. Their values are inputs of every answer (`Wiring.controls`), in `SETTINGS` order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from ...settings import SETTINGS, GenerationSettings
from .. import handlers
from ..tabs import Tab
from ..wiring import QUICK, TAKING_EVENT, Wiring


def reset_instructions(tab: Tab, default: str) -> str:
    tab.session.instructions = default
    return default


@dataclass
class ControlsPanel:
    instructions: gr.Textbox
    reset: gr.Button
    settings: list[gr.components.Component]  # one control per sampling setting, in `SETTINGS` order (the order the handlers take them)

    @classmethod
    def build(cls, instructions: str, defaults: GenerationSettings) -> "ControlsPanel":
        with gr.Accordion("Instructions", open=False):
            box = gr.Textbox(value=instructions, label="System instructions", lines=4, max_lines=16, elem_id="instructions")
            reset = gr.Button("Reset to default", size="sm")
        with gr.Accordion("Settings", open=False):
            settings = [_control(declared, getattr(defaults, declared.name)) for declared in SETTINGS]
        return cls(box, reset, settings)

    def name(self, wiring: Wiring) -> None:
        wiring.name(instructions=self.instructions, **{declared.name: control for declared, control in zip(SETTINGS, self.settings)})
        wiring.controls[:] = [self.instructions, *self.settings]

    def wire(self, wiring: Wiring, default_instructions: str) -> None:
        self.reset.click(wiring.bind(partial(reset_instructions, default=default_instructions)), wiring.state, self.instructions, **QUICK)
        # Queued with the messages, so "Settings not applied" can show and a message sent next sees the change.
        self.instructions.blur(wiring.bind(handlers.apply_controls), [wiring.state, *wiring.controls], None, **TAKING_EVENT)


def _control(declared: Any, value: Any) -> Any:
    low, high, step = declared.ui
    if declared.optional:  # the seed: a number, -1 = unset
        return gr.Number(value=-1 if value is None else value, label=declared.label, info=declared.help,
                         precision=0, minimum=-1, maximum=declared.high)
    # A default set outside the usual range (a flag) widens the slider rather than being cut.
    return gr.Slider(min(low, value), max(high, value), value=value, step=step, label=declared.label, info=declared.help)
