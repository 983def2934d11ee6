"""The page's token view: handlers for its panel ("Tokens: how sure the model was").

Opening the panel turns recording on for the tab's next answers (closing it, off: it costs a few
percent of decoding speed, so nothing is recorded while nobody looks). The panel shows the picked
answer (clicked in the chat) or else the last one; a click on a token shows its alternatives, and
"Continue from this token" makes a new version of the answer that goes on from the one chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ...errors import ChatError
from ...session import Reply
from ...tree import ChatMessage
from ..handlers import apply_controls, stream, takes_settings, warn
from ..tabs import Tab
from ..token_html import CLICK_SCRIPT, CSS, DISTRIBUTION_CHOICES, alternative_choices, chips, details
from ..view import Pages, PageUpdate, page
from ..wiring import QUICK, Wiring

SHOWN = ("token_chips", "token_details", "token_alternatives", "token_continue")  # the panel's named outputs
CLOSED = "Open this panel before an answer to see its tokens: answers record them only while it is open."
NOT_RECORDED = ("This answer was made while this panel was closed, so its tokens were not recorded: "
                "**Retry**, **Reproduce** or send a message to see them.")
NO_ANSWER = "No answer yet: send a message, and its tokens appear here with how likely the model found each."
BEAMS = ("This answer was made by beam search, which keeps several candidate answers at once: there is no one "
         "probability per token to show. Set **Beams** to 1 for the token view.")
PICK_A_TOKEN = "Click a token to see what else the model considered there."


@dataclass
class TokensPanel:
    accordion: gr.Accordion
    distribution: gr.Radio
    chips: gr.HTML
    details: gr.HTML
    alternatives: gr.Radio
    continue_button: gr.Button

    @classmethod
    def build(cls) -> "TokensPanel":
        """The panel's controls, in the page's current layout context."""
        with gr.Accordion("Tokens: how sure the model was", open=False, elem_id="tokens") as accordion:
            distribution = gr.Radio(DISTRIBUTION_CHOICES, value=DISTRIBUTION_CHOICES[0][1], label="Probabilities shown",
                                    elem_id="token-distribution")
            shown = gr.HTML(f"<p>{CLOSED}</p>", elem_id="token-view", js_on_load=CLICK_SCRIPT, css_template=CSS)
            picked = gr.HTML("", elem_id="token-details", css_template=CSS)
            alternatives = gr.Radio([], label="Take another token here", elem_id="token-alternatives")
            button = gr.Button("Continue from this token", size="sm", interactive=False)
        return cls(accordion, distribution, shown, picked, alternatives, button)

    def name(self, wiring: Wiring) -> None:
        wiring.name(token_chips=self.chips, token_details=self.details, token_alternatives=self.alternatives,
                    token_continue=self.continue_button)

    def wire(self, wiring: Wiring) -> None:
        """The panel's own events; "Continue from this token" streams a new version (one of `wiring.generating`)."""
        state, outputs = wiring.state, wiring.outputs(*SHOWN)
        self.accordion.expand(wiring.bind(opened), [state, self.distribution], outputs, **QUICK)
        self.accordion.collapse(wiring.bind(closed), state, None, **QUICK)
        self.distribution.change(wiring.bind(view), [state, self.distribution], outputs, **QUICK)
        self.chips.click(wiring.bind(pick_token), [state, self.distribution], outputs, **QUICK)
        wiring.answers(self.continue_button.click(wiring.bind_stream(continue_from_token),
                                                  [state, self.alternatives, self.distribution, *wiring.controls],
                                                  **wiring.answering(api_visibility="private")))

    def redraw_after(self, wiring: Wiring, events: list[Any]) -> None:
        """Shows the answer now targeted after each of `events` (a new answer, another version, a click in the chat)."""
        for event in events:
            event.then(wiring.bind(view), [wiring.state, self.distribution], wiring.outputs(*SHOWN), **QUICK)


def view(tab: Tab, name: str) -> PageUpdate:
    """The panel for the picked answer (or else the last), under distribution `name`."""
    index = tab.picked_answer()
    answer = tab.session.history[index] if index is not None else None
    log = tab.session.token_logs.of(answer) if answer is not None else None
    if answer is None or log is None:
        note = NO_ANSWER if answer is None else (BEAMS if _by_beam_search(answer) else NOT_RECORDED)
        return _shown(f"<p>{_markdown_bold(note)}</p>", "")
    picked = tab.token_pick[1] if tab.token_pick and tab.token_pick[0] == answer["id"] else None
    if picked is None or picked >= len(log.steps):
        return _shown(chips(log, name), f"<p>{PICK_A_TOKEN}</p>")
    choices = alternative_choices(log, picked, name)
    return _shown(chips(log, name, picked), details(log, picked, name), choices)


def _shown(tokens: str, token_details: str, choices: list[tuple[str, int]] | None = None) -> PageUpdate:
    return PageUpdate(token_chips=tokens, token_details=token_details, token_alternatives=gr.update(choices=choices or [], value=None),
                      token_continue=gr.update(interactive=bool(choices)))


def _by_beam_search(answer: ChatMessage) -> bool:
    provenance = answer.get("provenance")
    return provenance is not None and any(part.settings.get("num_beams", 1) > 1 for part in provenance.parts)


def opened(tab: Tab, name: str) -> PageUpdate:
    tab.record_tokens = True
    return view(tab, name)


def closed(tab: Tab) -> None:
    tab.record_tokens = False


def pick_token(tab: Tab, name: str, event: gr.EventData) -> PageUpdate:
    """A click on a token chip: its alternatives."""
    index = tab.picked_answer()
    position = (event._data or {}).get("token") if isinstance(getattr(event, "_data", None), dict) else None
    if index is not None and isinstance(position, int):
        tab.token_pick = (tab.session.history[index]["id"], position)
    return view(tab, name)


@takes_settings
def continue_from_token(tab: Tab, choice: int | None, name: str, instructions: str | None = None,
                        *values: Any) -> Pages:
    """A new version of the answer: the same tokens up to the picked one, the chosen alternative, then the model."""
    apply_controls(tab, instructions, *values)
    try:
        reply = _fork(tab, tab.picked_answer(), choice, name)
    except ChatError as error:
        warn(str(error))
        yield page(tab)
        return
    if reply is None:  # the chosen token ends the answer: the new version is complete as it is
        yield page(tab)
        return
    yield from stream(tab, reply)


def _fork(tab: Tab, index: int | None, choice: int | None, name: str) -> Reply | None:
    if index is None or tab.token_pick is None or choice is None:
        raise ChatError("click a token, then pick one of its alternatives")
    session = tab.session
    log = session.token_logs.of(session.history[index])
    answer_id, position = tab.token_pick
    if log is None or answer_id != session.history[index]["id"] or position >= len(log.steps):
        raise ChatError("that token is no longer shown: click a token again")
    top = log.steps[position].dists[log.shown(name)].top
    if not 0 <= choice < len(top):
        raise ChatError("pick one of the alternatives shown")
    tab.token_pick = None
    reply = session.take_token(index, position, top[choice], tokens=tab.record_tokens)
    tab.focus_on(index)  # the new version
    return reply


def _markdown_bold(text: str) -> str:
    parts = text.split("**")
    return "".join(f"<b>{part}</b>" if i % 2 else part for i, part in enumerate(parts))
