"""Compare side by side: the message in the box answered by 2 to 4 contenders at once, in columns under the chat;
a blind vote (A is better, B is better …, Tie, Both bad), Continue with this answer, and the leaderboard.

A contender is written as the terminal's /compare takes it (`temperature=1.2`, `model=NAME`, `skill=summarize@2`,
`instructions="Be terse."`); a blank box is the chat as it is. The quick choices fill the boxes for the common cases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import gradio as gr

from ...compare import LETTERS, MAX_CONTENDERS, Comparison, Contender, Outcome, Vote
from ...errors import ChatError
from ...leaderboard import ratings
from ...skill_library import SkillLibrary
from ...settings import SETTINGS
from ...store.store import Store, user_owner
from .. import handlers
from ..compare_html import CSS, ShownColumn, columns_html, leaderboard_html
from ..tabs import Tab
from ..view import PAGE, Pages, PageUpdate, page
from ..wiring import QUICK, TAKING_EVENT, Wiring
from .chat import Keeping
from .models import MODEL_SETS, chat_controls

DRAW_EVERY_S = 0.1  # the columns are drawn again at most 10 times a second while they grow
QUICK_CHOICES = ("Same, one setting changed", "Two versions of this skill", "Two models")
BOX_HINT = "blank: the chat as it is · temperature=1.2 · model=NAME · skill=summarize@2 · instructions=\"Be terse.\""
HELP = ("One message, several answers at once. Each box is a contender: what it changes from this chat (blank: nothing). "
        "**Compare** sends the message in the box to each. Blind: the names stay hidden, in shuffled columns, until you vote.")
SHOWN = ("columns", "votes", *(f"vote_{n}" for n in range(MAX_CONTENDERS)), "go_on", *(f"continue_{n}" for n in range(MAX_CONTENDERS)))


def compare_view(tab: Tab) -> PageUpdate:
    """The columns of the comparison of the chat's last message (none: hidden), its vote and Continue buttons."""
    comparisons = tab.session.comparisons
    shown, run = comparisons.shown, comparisons.comparing  # (each read once: Undo, Clear may change them meanwhile)
    if shown is None:
        return PageUpdate(columns=gr.update(value="", visible=False), votes=gr.update(visible=False), go_on=gr.update(visible=False))
    question, comparison = shown
    running = {reply.answer.get("id") for reply in run.replies if not reply.ended.is_set()} if run and run.question is question else set()
    columns = [_shown_column(tab, column.answer_id, column.answer_id in running) for column in comparison.columns]
    done = not running
    undecided = tab.session.history[-1] is question  # nobody went on from it yet
    update = PageUpdate(columns=gr.update(value=columns_html(comparison, columns), visible=True),
                        votes=gr.update(visible=done and comparison.outcome is None), go_on=gr.update(visible=done and undecided))
    for n in range(MAX_CONTENDERS):
        update[f"vote_{n}"] = gr.update(visible=n < len(comparison.columns))
        update[f"continue_{n}"] = gr.update(visible=n < len(comparison.columns))
    return update


def _shown_column(tab: Tab, answer_id: str, running: bool) -> ShownColumn:
    answer = tab.session.tree.messages.get(answer_id)
    tokens = tab.session.token_logs.of(answer) if answer is not None and not running else None
    return ShownColumn(answer, running, tokens)


def contenders(library: SkillLibrary, tab: Tab, boxes: tuple[str, ...]) -> list[Contender]:
    """The boxes as contenders: the first two always (blank: the chat as it is), the others where filled."""
    def find(name: str, version: int | None) -> Any:
        return library.find(tab.skills_owner, name, version)

    return [Contender.parse(box or "", find) for n, box in enumerate(boxes) if n < 2 or (box or "").strip()]


def start(library: SkillLibrary, keeping: Keeping, tab: Tab, *values: Any) -> PageUpdate:
    """Compare, its first step: the message in the box taken, each contender's answer started (`stream` then draws the
    columns as they grow). `values`: `keeping`'s inputs, then the page's own (`Inputs`). Refused: a warning, the box
    as it was."""
    kept, given = values[:len(keeping.inputs)], Inputs.of(values[len(keeping.inputs):])
    handlers.apply_controls(tab, *given.controls)
    session = tab.session
    try:
        attachment = handlers.read_attached(given.attached)
        session.comparisons.compare(given.text or "", contenders(library, tab, given.boxes), given.skill,
                                    handlers.form_values(session, given.skill, [str(f or "") for f in given.form]),
                                    bool(given.blind), tab.record_tokens, attachment, before_taking=lambda: keeping.keep(tab))
    except ChatError as error:
        handlers.warn(str(error))
        return PageUpdate(page(tab), **compare_view(tab))
    attached = gr.update(value=None) if attachment is not None else gr.skip()
    return PageUpdate(page(tab, "", running=True), **compare_view(tab), **keeping.shown(tab, *kept), attached=attached)


def stream(tab: Tab) -> Pages:
    """Compare, its second step: the columns drawn as they grow, then the page. Closed early (Stop, a closed tab),
    every column stops where it is."""
    run = tab.session.comparisons.comparing
    try:
        while run is not None and not run.done:
            yield compare_view(tab)
            time.sleep(DRAW_EVERY_S)
    finally:
        if run is not None and not run.done:
            run.cancel()
            run.wait(handlers.STOP_DRAWS_WITHIN_S)
    yield PageUpdate(page(tab), **compare_view(tab))


@dataclass
class Inputs:
    """The Compare button's inputs (after the saved chats' own): the message box, the Skill menu, Blind, the contenders'
    boxes, the Attach box, the variables' form, then the Instructions box and a control per setting."""

    text: str
    skill: str | None
    blind: bool
    boxes: tuple[str, ...]
    attached: Any
    form: tuple[Any, ...]
    controls: tuple[Any, ...]

    @classmethod
    def of(cls, values: tuple[Any, ...]) -> "Inputs":
        text, skill, blind, *rest = values
        controls = len(SETTINGS) + 1
        boxes, attached = tuple(rest[:MAX_CONTENDERS]), rest[MAX_CONTENDERS]
        return cls(text, skill, blind, boxes, attached, tuple(rest[MAX_CONTENDERS + 1:-controls]), tuple(rest[-controls:]))


def vote(tab: Tab, outcome: Outcome, winner: int | None = None) -> PageUpdate:
    try:
        comparison = tab.session.comparisons.judge(outcome, winner)
        handlers.info(f"Vote: {comparison.verdict()} · " + " · ".join(
            f"{comparison.letter(n)}: {column.label}" for n, column in enumerate(comparison.columns)))
    except ChatError as error:
        handlers.warn(str(error))
    return compare_view(tab)


def go_on(tab: Tab, index: int) -> PageUpdate:
    """Continue with this answer: a preference for it (unless the vote is in), and the chat goes on from its branch."""
    try:
        column = tab.session.comparisons.go_on_with(index)
        handlers.info(f"The chat goes on with {LETTERS[index]}: {column.label}")
    except ChatError as error:
        handlers.warn(str(error))
    return PageUpdate(page(tab), **chat_controls(tab), **compare_view(tab))


def quick_choice(library: SkillLibrary, choice: str, tab: Tab, skill: str | None) -> list[Any]:
    """The boxes filled for a common case (a case that can't be: a warning, the boxes as they were)."""
    session = tab.session
    try:
        if choice == QUICK_CHOICES[0]:
            return ["", "temperature=1.2", "", ""]
        if choice == QUICK_CHOICES[1]:
            picked = session.skills.pick(skill)
            if not picked.version or picked.version < 2:
                raise ChatError(f"{picked.name} has one version: save a new version in the Skills section first"
                                if picked.version else f"{picked.name} is the skills file's: it has no versions; duplicate it "
                                "in the Skills section and save a new version")
            return [f"skill={picked.command}@{picked.version - 1}", f"skill={picked.command}@{picked.version}", "", ""]
        others = [name for name in (session.models.names() if session.models is not None else []) if name != session.model]
        if not others:
            raise ChatError("this app has one model: start it with another --model to compare two")
        return ["", f'model="{others[0]}"', "", ""]
    except ChatError as error:
        handlers.warn(str(error))
        return [gr.skip()] * MAX_CONTENDERS


def leaderboard(votes: Callable[[Tab], tuple[list[Vote], str]], tab: Tab) -> str:
    found, whose = votes(tab)
    return leaderboard_html(ratings(found) if found else [], whose)


def votes_of(store: Store | None, admins: frozenset[str]) -> Callable[[Tab], tuple[list[Vote], str]]:
    """Where the leaderboard's votes come from: the owner's chats in the store (an admin: everyone's); without a store,
    this tab's chat."""

    def votes(tab: Tab) -> tuple[list[Vote], str]:
        if store is None:
            found = [m["comparison"] for m in tab.session.tree.messages.values() if "comparison" in m]
            whose = "the votes of this chat (the app keeps no chats: --db none)"
        else:
            everyone = bool(tab.owner) and tab.owner in {user_owner(name) for name in admins}
            found = [Comparison.from_json(doc) for doc in store.votes(None if everyone else tab.owner)]
            whose = "everyone's votes (you are an admin)" if everyone else "your votes"
        return [vote for comparison in found if (vote := comparison.as_vote()) is not None], whose

    return votes


@dataclass
class ComparePanel:
    library: SkillLibrary
    votes_source: Callable[[Tab], tuple[list[Vote], str]]
    columns: gr.HTML
    votes: gr.Row
    vote_buttons: list[gr.Button]
    tie: gr.Button
    both_bad: gr.Button
    go_on: gr.Row
    continue_buttons: list[gr.Button]
    quick: list[gr.Button]
    boxes: list[gr.Textbox]
    blind: gr.Checkbox
    send: gr.Button
    board_section: gr.Accordion
    board: gr.HTML
    refresh: gr.Button

    @classmethod
    def build(cls, library: SkillLibrary, votes: Callable[[Tab], tuple[list[Vote], str]]) -> "ComparePanel":
        """The columns and their buttons (under the chat), then the Compare and Leaderboard sections."""
        columns = gr.HTML("", visible=False, elem_id="compare-columns", css_template=CSS)
        with gr.Row(visible=False) as vote_row:
            vote_buttons = [gr.Button(f"{letter} is better", size="sm", elem_id=f"vote-{letter.lower()}") for letter in LETTERS]
            tie = gr.Button("Tie", size="sm", elem_id="vote-tie")
            both_bad = gr.Button("Both bad", size="sm", elem_id="vote-bad")
        with gr.Row(visible=False) as go_on_row:
            continue_buttons = [gr.Button(f"Continue with {letter}", size="sm", elem_id=f"continue-{letter.lower()}")
                                for letter in LETTERS]
        with gr.Accordion("⚖️ Compare side by side", open=False, elem_id="compare"):
            gr.Markdown(HELP)
            with gr.Row():
                quick = [gr.Button(choice, size="sm", elem_id=f"compare-quick-{n}") for n, choice in enumerate(QUICK_CHOICES)]
            with gr.Row():
                boxes = [gr.Textbox(value="temperature=1.2" if n == 1 else "", label=f"Contender {n + 1}", placeholder=BOX_HINT,
                                    elem_id=f"contender-{n + 1}", min_width=200) for n in range(MAX_CONTENDERS)]
            with gr.Row(equal_height=True):
                blind = gr.Checkbox(True, label="Blind: names hidden and columns shuffled until you vote", elem_id="compare-blind")
                send = gr.Button("Compare", variant="primary", scale=0, min_width=120, elem_id="compare-send")
        with gr.Accordion("🏆 Leaderboard", open=False, elem_id="leaderboard-section") as board_section:
            board = gr.HTML("", elem_id="leaderboard", css_template=CSS)
            refresh = gr.Button("Refresh", size="sm", elem_id="leaderboard-refresh")
        return cls(library, votes, columns, vote_row, vote_buttons, tie, both_bad, go_on_row, continue_buttons, quick, boxes, blind,
                   send, board_section, board, refresh)

    def name(self, wiring: Wiring) -> None:
        wiring.name(columns=self.columns, votes=self.votes, go_on=self.go_on, leaderboard=self.board,
                    **{f"vote_{n}": b for n, b in enumerate(self.vote_buttons)},
                    **{f"continue_{n}": b for n, b in enumerate(self.continue_buttons)})

    def wire_answers(self, wiring: Wiring, message: gr.Textbox, skill: gr.Dropdown, form: list[Any], keeping: Keeping) -> None:
        """Compare streams answers: counted among the answering events (Stop, Undo, Clear cancel it)."""
        inputs = [wiring.state, *keeping.inputs, message, skill, self.blind, *self.boxes, wiring.components["attached"], *form,
                  *wiring.controls]
        # Two steps, as Enter/Send takes a message and then answers: the saved chats' list and the browser's state are
        # drawn once, by the first; a stream that left the browser's state out of later pages would have the page
        # send it back marked as an update.
        started = self.send.click(wiring.bind(partial(start, self.library, keeping)), inputs,
                                  wiring.outputs(*PAGE, *SHOWN, "attached", *keeping.shows), **TAKING_EVENT)
        answering = wiring.answering(api_visibility="private")
        answering["outputs"] = [*answering["outputs"], *wiring.outputs(*SHOWN)]
        wiring.answers(started.success(wiring.bind_stream(stream), wiring.state, **answering))

    def wire(self, wiring: Wiring, skill: gr.Dropdown) -> None:
        bind, state, shown = wiring.bind, wiring.state, wiring.outputs(*SHOWN)
        judged = [button.click(bind(partial(vote, outcome=Outcome.WIN, winner=n)), state, shown, **QUICK)
                  for n, button in enumerate(self.vote_buttons)]
        judged += [self.tie.click(bind(partial(vote, outcome=Outcome.TIE)), state, shown, **QUICK),
                   self.both_bad.click(bind(partial(vote, outcome=Outcome.BOTH_BAD)), state, shown, **QUICK)]
        chat_outputs = wiring.outputs(*PAGE, *SHOWN, *(name for name in MODEL_SETS if name != "skill"))
        judged += [button.click(bind(partial(go_on, index=n)), state, chat_outputs, cancels=wiring.cancels, queue=False,
                                show_progress="hidden", api_visibility="private")
                   for n, button in enumerate(self.continue_buttons)]
        for choice, button in zip(QUICK_CHOICES, self.quick):
            button.click(bind(partial(quick_choice, self.library, choice)), [state, skill], self.boxes, **QUICK)
        board = partial(leaderboard, self.votes_source)
        for event in judged:
            event.then(bind(board), state, self.board, **QUICK)
        self.refresh.click(bind(board), state, self.board, **QUICK)
        self.board_section.expand(bind(board), state, self.board, **QUICK)  # (drawn when opened: a fit takes a moment)

    def redraw_after(self, wiring: Wiring, events: list[Any]) -> None:
        """The columns again after each of `events` (another answer, version, chat; Stop, Undo, Clear)."""
        for event in events:
            event.then(wiring.bind(compare_view), wiring.state, wiring.outputs(*SHOWN), **QUICK)
