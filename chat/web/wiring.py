"""How the page's panels wire their events: each handler gets its tab and names what it shows.

Handlers are plain functions of a `Tab` (chat/web/tabs.py) and the values of the event's inputs. What
they show comes back as a `PageUpdate`: output name → value. `Wiring.bind` turns the names into the
components the panels registered under them (Gradio takes a dict of components), so no handler depends
on the order of an event's outputs, and an output left out is left as it is.

>>> wiring.name(chat=chatbot, status=status_line)  # doctest: +SKIP
>>> button.click(wiring.bind(handlers.clear), wiring.state, wiring.outputs("chat", "status"))  # doctest: +SKIP
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable, Iterator

import gradio as gr
from gradio.blocks import Block
from gradio.events import Dependency

from .tabs import Tabs, new_tab_key
from .view import PAGE, Pages, PageUpdate

# All answers share one concurrency group, so `--concurrency N` counts answers however they were
# started (Enter, Send, Retry); by default Gradio would give each event listener its own N.
GENERATE = "generate"
TAKING = "taking"  # taking messages, Retry and settings into the chat: milliseconds each, never behind an answer
# Quick events: outside the queue, so that they act at once, also while an answer streams.
QUICK: dict[str, Any] = dict(queue=False, show_progress="hidden", api_visibility="private")
# No limit: taking a message waits for no model, and the page's numbers (chat panel) keep a tab's messages
# in the order sent however their requests overtake each other.
TAKING_EVENT: dict[str, Any] = dict(concurrency_id=TAKING, concurrency_limit=None, show_progress="hidden", trigger_mode="multiple",
                                    api_visibility="private")


def tab_key(state: dict) -> str:
    """The key of the tab's session: made by the tab's first event and kept in its State's dict."""
    return state.setdefault("key", new_tab_key())  # one call: two first events at once get one key


class Wiring:
    """What every panel's wiring shares: the tabs, the tab's State, the named outputs, the answering events."""

    def __init__(self, tabs: Tabs, state: gr.State):
        self.tabs, self.state = tabs, state
        self.components: dict[str, Block] = {}
        self.controls: list[Block] = []  # the Instructions box, then a control per setting: the answers' inputs
        self.generating: list[Dependency] = []  # the events that stream an answer (Stop, Undo, Clear cancel them)

    def name(self, **components: Block) -> None:
        """Registers `components` under their names: handlers return values by these names."""
        self.components.update(components)

    def outputs(self, *names: str) -> list[Block]:
        return [self.components[name] for name in names]

    def answering(self, **options: Any) -> dict[str, Any]:
        """An event that streams an answer: the whole page, and the tab's State (written, so Gradio frees it)."""
        return dict(outputs=[*self.outputs(*PAGE), self.state], concurrency_id=GENERATE, show_progress="minimal",
                    trigger_mode="multiple", **options)

    def answers(self, event: Dependency) -> Dependency:
        """Counts `event` among those that stream an answer; returns it."""
        self.generating.append(event)
        return event

    @property
    def cancels(self) -> list[dict[str, Any]]:
        """The answers' events, as an event's `cancels` takes them (Stop, Undo, Clear, a switch of version)."""
        return list(self.generating)

    def after_answers(self, handler: Callable[..., Any], inputs: list[Block], outputs: Block | list[Block]) -> None:
        """After each answer (and its last page), `handler` draws `outputs` again."""
        for event in self.generating:
            event.then(self.bind(handler), inputs, outputs, **QUICK)

    def bind(self, handler: Callable[..., Any], keep: bool = False) -> Callable[..., Any]:
        """`handler(tab, …)` → a Gradio handler taking the tab's State instead.

        `keep`: the event also writes the State back. Gradio deletes a closed tab's State (dropping
        its tab) only if an event wrote it; a State only ever read stays forever.
        """

        @wraps(handler)  # keeps the parameter names: gradio_client shows them
        def bound(state: dict, *args: Any, **kwargs: Any) -> Any:
            with self.tabs.turn(tab_key(state)) as tab:
                shown = handler(tab, *args, **kwargs)
            return self.shown(shown, state if keep else None)

        return bound

    def bind_stream(self, handler: Callable[..., Pages]) -> Callable[..., Iterator[Any]]:
        """As `bind` with `keep`, for generator handlers (Gradio streams only from generator functions).

        Only the start (settings applied, message added, answer begun: up to the first page) holds
        the tab's turn; the streaming doesn't, so Stop, Undo and Clear act while it runs.
        """

        @wraps(handler)
        def bound(state: dict, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with self.tabs.turn(tab_key(state)) as tab:
                pages = handler(tab, *args, **kwargs)
                first = next(pages, None)
            try:
                if first is not None:
                    yield self.shown(first, state)
                    for shown in pages:
                        yield self.shown(shown, state)
            finally:
                pages.close()  # this stream closed (Stop, a closed tab): the answer stops at once

        return bound

    def shown(self, shown: Any, state: dict | None) -> Any:
        """A handler's result as Gradio takes it: a `PageUpdate`'s names as components (and the State)."""
        if not isinstance(shown, PageUpdate):
            return shown
        values = {self.components[name]: value for name, value in shown.items()}
        if state is not None:
            values[self.state] = state
        return values
