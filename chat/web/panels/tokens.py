"""The page's token view: handlers for its panel ("Tokens: how sure the model was").

Opening the panel turns recording on for the tab's next answers (closing it, off: it costs a few
percent of decoding speed, so nothing is recorded while nobody looks). The panel shows the picked
answer (clicked in the chat) or else the last one; a click on a token shows its alternatives, and
"Continue from this token" makes a new version of the answer that goes on from the one chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr

from ...errors import ChatError
from ...session import ChatSession, Reply
from ..handlers import _stream, apply_controls, page, takes_settings, warn
from ..token_html import CLICK_SCRIPT, CSS, DISTRIBUTION_CHOICES, alternative_choices, chips, details

TOKEN_OUTPUTS = ("token chips", "token details", "alternatives", "continue from token")
CLOSED = "Open this panel before an answer to see its tokens: answers record them only while it is open."
NOT_RECORDED = ("This answer was made while this panel was closed, so its tokens were not recorded: "
                "**Retry**, **Reproduce** or send a message to see them.")
NO_ANSWER = "No answer yet: send a message, and its tokens appear here with how likely the model found each."
BEAMS = ("This answer was made by beam search, which keeps several candidate answers at once: there is no one "
         "probability per token to show. Set **Beams** to 1 for the token view.")
PICK_A_TOKEN = "Click a token to see what else the model considered there."


@dataclass
class Panel:
    accordion: Any
    distribution: Any
    chips: Any
    details: Any
    alternatives: Any
    continue_button: Any

    @classmethod
    def build(cls) -> "Panel":
        """The panel's controls, in the page's current layout context."""
        with gr.Accordion("Tokens: how sure the model was", open=False, elem_id="tokens") as accordion:
            distribution = gr.Radio(DISTRIBUTION_CHOICES, value=DISTRIBUTION_CHOICES[0][1], label="Probabilities shown",
                                    elem_id="token-distribution")
            shown = gr.HTML(f"<p>{CLOSED}</p>", elem_id="token-view", js_on_load=CLICK_SCRIPT, css_template=CSS)
            picked = gr.HTML("", elem_id="token-details", css_template=CSS)
            alternatives = gr.Radio([], label="Take another token here", elem_id="token-alternatives")
            button = gr.Button("Continue from this token", size="sm", interactive=False)
        return cls(accordion, distribution, shown, picked, alternatives, button)

    @property
    def outputs(self) -> list[Any]:
        return [self.chips, self.details, self.alternatives, self.continue_button]

    def wire(self, bind: Callable, bind_stream: Callable, session: Any, controls: list[Any], answering: dict[str, Any]) -> Any:
        """The panel's own events. Returns its answering event (it streams a new version)."""
        quiet: dict[str, Any] = dict(queue=False, show_progress="hidden", api_visibility="private")
        self.accordion.expand(bind(opened), [session, self.distribution], self.outputs, **quiet)
        self.accordion.collapse(bind(closed), session, None, **quiet)
        self.distribution.change(bind(view), [session, self.distribution], self.outputs, **quiet)
        self.chips.click(bind(pick_token), [session, self.distribution], self.outputs, **quiet)
        forked = self.continue_button.click(bind_stream(continue_from_token), [session, self.alternatives, self.distribution, *controls],
                                            api_visibility="private", **answering)
        return forked

    def redraw_after(self, events: list[Any], bind: Callable, session: Any) -> None:
        """Shows the answer now targeted after each of `events` (a new answer, another version, a click in the chat)."""
        for event in events:
            event.then(bind(view), [session, self.distribution], self.outputs, queue=False, show_progress="hidden",
                       api_visibility="private")


def target(session: ChatSession) -> int | None:
    """The history index of the answer the panel shows: the picked one, or else the last."""
    answers = [index for index, message in enumerate(session.history) if message["role"] == "assistant"]
    focused = session.focused_index()
    return focused if focused in answers else (answers[-1] if answers else None)


def view(session: ChatSession, name: str) -> tuple:
    """The panel for the target answer, under distribution `name`."""
    index = target(session)
    log = session.tokens_of(session.history[index]) if index is not None else None
    if index is None or log is None:
        note = NO_ANSWER if index is None else (BEAMS if _by_beam_search(session.history[index]) else NOT_RECORDED)
        return f"<p>{_markdown_bold(note)}</p>", "", gr.update(choices=[], value=None), gr.update(interactive=False)
    picked = session.token_pick[1] if session.token_pick and session.token_pick[0] == session.history[index]["id"] else None
    if picked is not None and picked >= len(log.steps):
        picked = None
    if picked is None:
        return chips(log, name), f"<p>{PICK_A_TOKEN}</p>", gr.update(choices=[], value=None), gr.update(interactive=False)
    choices = alternative_choices(log, picked, name)
    return (chips(log, name, picked), details(log, picked, name), gr.update(choices=choices, value=None),
            gr.update(interactive=bool(choices)))


def _by_beam_search(answer: dict[str, Any]) -> bool:
    parts = (answer.get("provenance") or {}).get("parts") or [{}]
    return any((part.get("settings") or {}).get("num_beams", 1) > 1 for part in parts)


def opened(session: ChatSession, name: str) -> tuple:
    session.record_tokens = True
    return view(session, name)


def closed(session: ChatSession) -> None:
    session.record_tokens = False


def pick_token(session: ChatSession, name: str, event: gr.EventData) -> tuple:
    """A click on a token chip: its alternatives."""
    index = target(session)
    position = (event._data or {}).get("token") if isinstance(getattr(event, "_data", None), dict) else None
    if index is not None and isinstance(position, int):
        session.token_pick = (session.history[index]["id"], position)
    return view(session, name)


@takes_settings
def continue_from_token(session: ChatSession, choice: int | None, name: str, instructions: str | None = None,
                        *values: Any) -> Iterator[tuple]:
    """A new version of the answer: the same tokens up to the picked one, the chosen alternative, then the model."""
    apply_controls(session, instructions, *values)
    index = target(session)

    try:
        reply = _fork(session, index, choice, name)
    except ChatError as error:
        warn(str(error))
        yield page(session)
        return
    if reply is None:  # the chosen token ends the answer: the new version is complete as it is
        yield page(session)
        return
    yield from _stream(session, reply)


def _fork(session: ChatSession, index: int | None, choice: int | None, name: str) -> Reply | None:
    if index is None or session.token_pick is None or choice is None:
        raise ChatError("click a token, then pick one of its alternatives")
    log = session.tokens_of(session.history[index])
    answer_id, position = session.token_pick
    if log is None or answer_id != session.history[index]["id"] or position >= len(log.steps):
        raise ChatError("that token is no longer shown: click a token again")
    top = log.steps[position].dists[log.shown(name)].top
    if not 0 <= choice < len(top):
        raise ChatError("pick one of the alternatives shown")
    session.token_pick = None
    return session.take_token(index, position, top[choice])


def _markdown_bold(text: str) -> str:
    parts = text.split("**")
    return "".join(f"<b>{part}</b>" if i % 2 else part for i, part in enumerate(parts))
