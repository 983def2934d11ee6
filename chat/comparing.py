"""A chat's comparisons: one message answered by 2 to 4 contenders at once, judged, and the chat going on from one.

`Comparisons` is the part of a `ChatSession` (chat/session.py) that compares (`session.comparisons`); `ComparisonRun` is one comparison's
answers streaming at once, a thread reading each. The answers are siblings below the message, each with its
provenance; the shown path ends at the message until the user goes on with a column (`go_on_with`), so nothing
shows one answer above the others. Contenders on one model share its batched steps (chat/local/batching.py);
contenders on different models run at once, their models checked against memory together before anything runs.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .attachments import Attachment, with_attachment
from .compare import MAX_CONTENDERS, MIN_CONTENDERS, Carried, Column, Comparison, Contender, Outcome, label
from .context_window import FittedPrompt
from .engine import Engine
from .errors import ChatError, ModelUnloaded, SkillError
from .messages import is_blank
from .provenance import Part, with_seed
from .reply import Reply
from .request import model_request, sent_messages
from .settings import GenerationSettings
from .skills import Skill, split_command
from .tree import ChatMessage

if TYPE_CHECKING:
    from .session import ChatSession

RETRY_COMMAND = "/retry"
READ_THREAD = "compare"
STOP_WAIT_S = 10.0  # Stop waits this long at most for each column's model to finish its step


@dataclass
class Plan:
    """One contender made concrete: the model, skill, instructions and settings its answer gets."""

    contender: Contender
    model: str
    skill: Skill
    instructions: str
    settings: GenerationSettings  # the chat's (or its model's defaults) before the skill's and the contender's

    def column(self, answer_id: str) -> Column:
        asked = self.settings.merged(self.skill.settings).merged(self.contender.settings)
        carried = Carried(self.model, self.contender.instructions, dict(self.contender.settings))
        return Column(answer_id, label(self.model, self.skill, self.instructions, asked), self.contender.describe(), carried)


@dataclass
class Prepared:
    """A contender's request, fitted to its model before the message is taken (what can't be is refused first)."""

    plan: Plan
    engine: Engine
    fitted: FittedPrompt
    settings: GenerationSettings  # seeded
    drawn: bool  # the seed was drawn here
    stops: tuple[str, ...]


class ComparisonRun:
    """A comparison's answers streaming at once: a thread reads each (`Reply`); the page and the terminal watch their
    messages grow. `cancel` stops them all (each keeps what came)."""

    def __init__(self, question: ChatMessage, replies: list[Reply]):
        self.question, self.replies = question, replies
        self._threads = [threading.Thread(target=_read, args=(reply,), name=READ_THREAD, daemon=True) for reply in replies]
        for thread in self._threads:
            thread.start()

    @property
    def comparison(self) -> Comparison:
        return self.question["comparison"]

    @property
    def done(self) -> bool:
        return all(reply.ended.is_set() for reply in self.replies)

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for every answer to end (at most `timeout` seconds each); True if they all have."""
        return all(reply.ended.wait(timeout) for reply in self.replies)

    def cancel(self) -> None:
        for reply in self.replies:
            reply.cancel()


def _read(reply: Reply) -> None:
    try:
        for _ in reply:
            pass
    except ChatError:
        pass  # the answer keeps its error (Reply.stream): its column shows it, the others go on


class Comparisons:
    """What a chat does to compare: `ChatSession.comparisons` (it uses the session's own parts, as its methods do)."""

    def __init__(self, chat: "ChatSession"):
        self.chat = chat
        self.comparing: ComparisonRun | None = None  # the comparison whose answers stream now

    def compare(self, text: str, contenders: Sequence[Contender], skill_name: str | None = None,
                values: Mapping[str, str] | None = None, blind: bool = True, tokens: bool = False,
                attachment: Attachment | None = None, before_taking: Callable[[], None] | None = None) -> ComparisonRun:
        """`text` answered by each of `contenders` at once (its skill: a /command, or `skill_name`); the shown path
        ends at the message, below it the answers as columns, shuffled when `blind`. Every contender's prompt is fitted
        first: fewer than 2 or more than 4, one that can't be, or models that won't fit together are refused (ChatError)
        before the message is taken. `tokens`: record each answer's token data (the token view is open; a column then
        shows its mean log-probability). `before_taking`: called just before (the page keeps a new chat in the store)."""
        if not MIN_CONTENDERS <= len(contenders) <= MAX_CONTENDERS:
            raise ChatError(f"compare {MIN_CONTENDERS} to {MAX_CONTENDERS} contenders, not {len(contenders)}")
        if text.strip() == RETRY_COMMAND:
            raise ChatError("type a message to compare (Retry is for one answer)")
        chat = self.chat
        self.leave()  # (a comparison shown above: refused unless it was judged, or goes on from its winner)
        skill, said = chat.skill_for(text, skill_name)
        values = None if split_command(text) is not None else values  # (a /command: its skill's defaults)
        typed = with_attachment(said, attachment) if attachment is not None else said
        if is_blank(typed):
            raise ChatError("type a message first")
        plans = [self._plan(contender, skill) for contender in contenders]
        engines = self._engines_together([plan.model for plan in plans])
        prepared = [self._prepare(plan, engines[plan.model], typed, values) for plan in plans]
        if attachment is not None:
            self._check_fits(prepared, attachment)
        if before_taking is not None:
            before_taking()
        chat.post(text, skill.name, values, attachment)
        chat._owed = False  # (answered here, not by `answer_last`)
        question = chat.history[-1]
        started = self._start_all(prepared, question, tokens)
        shown = Comparison.ordered([column for column, _ in started], blind, random.Random(chat.seeds.random()))
        question["comparison"] = Comparison(shown, blind)
        chat._record_shown()
        if chat.record is not None:
            chat.record.compared(question)
        chat.last_prompt = chat.last_stats = None  # (the prompt view would name a blind column's skill and instructions)
        run = self.comparing = ComparisonRun(question, [reply for _, reply in started])
        return run

    def _plan(self, contender: Contender, skill: Skill) -> Plan:
        chat, models = self.chat, self.chat.models
        model, instructions, settings = chat.model, chat.instructions, chat.settings
        if contender.model:
            found = models.find(contender.model) if models is not None else (chat.model if contender.model == chat.model else None)
            if found is None:
                known = ", ".join(models.names()) if models is not None else chat.model
                raise ChatError(f"no model called {contender.model!r} to compare; the list has: {known}")
            if found != chat.model and models is not None:  # another model: with its own defaults, as a chat picking it gets
                instructions, settings = models.defaults(found).applied(instructions, settings)
            model = found
        if contender.instructions is not None:
            instructions = contender.instructions
        return Plan(contender, model, contender.skill or skill, instructions, settings)

    def _engines_together(self, models: list[str]) -> dict[str, Engine]:
        """The engines of `models`, loaded together: the set is checked against memory first (ModelLoadError)."""
        if self.chat.models is None:
            return {self.chat.model: self.chat.engine}
        return self.chat.models.engines(models)

    def _prepare(self, plan: Plan, engine: Engine, typed: str, values: Mapping[str, str] | None) -> Prepared:
        """The contender's prompt: the message wrapped by its skill, after the chat as it is; fitted to its model."""
        try:
            asked = plan.skill.expand(typed, values)
        except SkillError:  # (another skill's, or version's, variables may not take the message's values: its defaults)
            asked = plan.skill.expand(typed)
        before = list(sent_messages(self.chat.history).values())
        request = model_request([*before, {"role": "user", "content": asked}], plan.instructions, plan.skill, plan.settings,
                                overrides=plan.contender.settings)
        seeded, drawn = with_seed(request.settings, self.chat.seeds)
        stops = request.stop_strings + (self.chat.models.defaults(plan.model).stop_strings if self.chat.models is not None else ())
        return Prepared(plan, engine, engine.prepare(request.messages, seeded), seeded, drawn, stops)

    @staticmethod
    def _check_fits(prepared: list[Prepared], attachment: Attachment) -> None:
        """An attached file that a contender's model would get only part of is refused (as a message's is: its end
        left out silently would be answered as if it were all)."""
        cut = next((one for one in prepared if one.fitted.message_trimmed), None)
        if cut is not None:
            raise ChatError(f"{attachment.name} does not fit: with it the prompt would be {cut.fitted.wanted:,} tokens, and "
                            f"{cut.plan.model} takes at most {cut.fitted.room:,}. Attach a shorter file or a part of it")

    def _start_all(self, prepared: list[Prepared], question: ChatMessage, tokens: bool) -> list[tuple[Column, Reply]]:
        """Each contender's answer started below `question`; one that fails to start stops those started before it."""
        started: list[tuple[Column, Reply]] = []
        try:
            for one in prepared:
                started.append(self._start(one, question, tokens))
        except ChatError:
            for _, reply in started:
                reply.cancel()
            raise
        return started

    def _start(self, one: Prepared, question: ChatMessage, tokens: bool) -> tuple[Column, Reply]:
        """One contender's answer, started below `question` (a sibling of the others; the shown path stays)."""
        chat, engine, plan = self.chat, one.engine, one.plan
        record = tokens and engine.exact_prompt
        try:  # (no cache: a chat's prefix cache serves one answer at a time)
            generation = engine.generate(one.fitted, one.settings, one.stops, cache=None, tokens=record)
        except ModelUnloaded:  # unloaded by another tab since it was loaded for this: loaded again, once
            engine = chat.models.engine(plan.model) if chat.models is not None else engine
            generation = engine.generate(one.fitted, one.settings, one.stops, cache=None, tokens=record)
        made = Part.made(engine, one.fitted, one.settings, one.drawn)
        answer: ChatMessage = {"role": "assistant", "content": "", "provenance": chat._begin(engine, plan.skill, plan.instructions, made)}
        if one.fitted.message_notice:
            answer["notice"] = f"Note: {one.fitted.message_notice}."
        chat.tree.add(answer, question["id"])
        if chat.record is not None:
            chat.record.added(answer, question)
        return plan.column(answer["id"]), Reply(generation, answer, made, chat.record, chat.token_logs, lambda _: None)

    # -- after the answers ---------------------------------------------------------------------

    @property
    def shown(self) -> tuple[ChatMessage, Comparison] | None:
        """The comparison of the last message of the user's shown (and its message), if it was compared."""
        question = next((m for m in reversed(self.chat.history) if m["role"] == "user"), None)
        if question is None or "comparison" not in question:
            return None
        return question, question["comparison"]

    @property
    def undecided(self) -> bool:
        """The chat ends at a compared message that nobody went on from."""
        shown = self.shown
        return shown is not None and self.chat.history[-1] is shown[0]

    def judge(self, outcome: Outcome, winner: int | None = None) -> Comparison:
        """The user's vote on the shown comparison (refused while its answers stream, and once cast)."""
        question, comparison = self._judgeable()
        comparison.vote(outcome, winner)
        if self.chat.record is not None:
            self.chat.record.compared(question)
        return comparison

    def go_on_with(self, index: int, take_on: bool = True) -> Column:
        """Continue with this answer: a preference for column `index` (unless the vote is in: it stays as cast), and the
        chat goes on from its branch, with what the column changed (`take_on`); the other columns stay as versions."""
        question, comparison = self._judgeable()
        if not 0 <= index < len(comparison.columns):
            raise ChatError("no such column")
        column = comparison.columns[index]
        if column.answer_id not in self.chat.tree.messages:
            raise ChatError("that answer is not in this chat")
        if comparison.outcome is None:
            comparison.vote(Outcome.WIN, index)
        comparison.continued = index
        self.chat.history[:] = self.chat.tree.path_to(self.chat.tree.leaf_below(column.answer_id))
        self.chat._record_shown()
        if take_on:
            self._take_on(column.carried)
        if self.chat.record is not None:
            self.chat.record.compared(question)
        self.chat.last_prompt, self.chat.first_in_view = None, 0
        return column

    def _judgeable(self) -> tuple[ChatMessage, Comparison]:
        shown, run = self.shown, self.comparing
        if shown is None:
            raise ChatError("no comparison to judge: compare a message first")
        if run is not None and run.question is shown[0] and not run.done:
            raise ChatError("the answers are still coming: judge them once they end (Stop ends them)")
        return shown

    def _take_on(self, carried: Carried) -> None:
        """The chat takes on what the column changed: its model (with the model's defaults, as picking it in the
        Model menu gives), then its instructions and settings."""
        chat = self.chat
        if carried.model != chat.model and chat.models is not None and chat.models.find(carried.model):
            chat.use_model(carried.model)
        if carried.instructions is not None:
            chat.instructions = carried.instructions
        if carried.settings:
            chat.settings = GenerationSettings.from_json(carried.settings, chat.settings)

    def leave(self) -> None:
        """Before a message below a compared one that nobody went on from: the chat goes on from the column voted
        better, with the model and settings it has (the page shows them: only Continue changes them); without one,
        refused (ChatError): which answer the chat goes on from is the user's to say."""
        shown = self.shown
        if shown is None or self.chat.history[-1] is not shown[0]:
            return
        comparison = shown[1]
        if comparison.outcome is Outcome.WIN and comparison.winner is not None:
            self.go_on_with(comparison.winner, take_on=False)
            return
        letters = " or ".join(comparison.letter(n) for n in range(len(comparison.columns)))
        raise ChatError(f"the last message was answered side by side: press Continue with {letters} under the answers "
                        "to go on from one of them (or Undo)")

    @property
    def running(self) -> bool:
        run = self.comparing
        return run is not None and not run.done

    def stop(self, wait: bool) -> None:
        run = self.comparing
        if run is not None:
            run.cancel()
            if wait:
                run.wait(STOP_WAIT_S)
