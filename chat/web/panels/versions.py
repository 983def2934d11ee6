"""Other versions of a message (Retry, edits, Reproduce, a token fork): Previous version / Next version, for
the message clicked in the chat or else the last one that has versions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from .. import handlers
from ..tabs import Tab
from ..view import PAGE, PageUpdate, page, versions_target
from ..wiring import QUICK, Wiring


def switch_version(tab: Tab, step: int) -> PageUpdate:
    """Previous version / Next version: of the message picked in the chat (or the last one with versions)."""
    index = versions_target(tab)
    if index is not None:
        tab.session.switch(index, step)
        tab.focus_on(index)
    return page(tab)


@dataclass
class VersionsPanel:
    bar: gr.Row  # the row, shown when a message has other versions
    line: gr.Markdown  # "Answer 2 · version 2 / 3"
    previous: gr.Button
    next: gr.Button

    @classmethod
    def build(cls) -> "VersionsPanel":
        with gr.Row(visible=False, equal_height=True) as bar:
            line = gr.Markdown("", elem_id="versions")
            previous = gr.Button("Previous version", size="sm", scale=0, min_width=140)
            following = gr.Button("Next version", size="sm", scale=0, min_width=140)
        return cls(bar, line, previous, following)

    def name(self, wiring: Wiring) -> None:
        wiring.name(versions_line=self.line, versions_bar=self.bar)

    def wire(self, wiring: Wiring, chatbot: gr.Chatbot) -> tuple[list[Any], Any]:
        """(the switches' events, a click on a message's, which picks it). Quick, like Undo: switching
        versions stops an answer in progress and shows the other branch at once."""
        switched = [button.click(wiring.bind(partial(switch_version, step=step)), wiring.state, wiring.outputs(*PAGE),
                                 queue=False, cancels=wiring.cancels, api_visibility="private")
                    for button, step in ((self.previous, -1), (self.next, +1))]
        picked = chatbot.select(wiring.bind(handlers.pick), wiring.state, wiring.outputs(*PAGE), **QUICK)
        return switched, picked
