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
from typing import TYPE_CHECKING, Mapping, Sequence

from .compare import MAX_CONTENDERS, MIN_CONTENDERS, Column, Comparison, Contender, label
from .engine import Engine
from .errors import ChatError, SkillError
from .leaderboard import Outcome
from .provenance import Part, with_seed
from .reply import Reply
from .request import model_request, sent_messages
from .settings import GenerationSettings
from .skills import Skill
from .tree import ChatMessage

if TYPE_CHECKING:
    from .session import ChatSession

READ_THREAD = "compare"


@dataclass
class Plan:
    """One contender made concrete: the model, skill, instructions and settings its answer gets."""

    contender: Contender
    model: str
    skill: Skill
    instructions: str
    settings: GenerationSettings  # the chat's (or its model's defaults) with the contender's changes; the skill's merge later

    def column(self, answer_id: str) -> Column:
        sets: dict[str, object] = {"model": self.model}
        if self.contender.instructions is not None or self.contender.model:
            sets["instructions"] = self.instructions
        if self.contender.settings:
            sets["settings"] = dict(self.contender.settings)
        asked = self.settings.merged(self.skill.settings).merged(self.contender.settings)
        return Column(answer_id, label(self.model, self.skill, self.instructions, asked), self.contender.describe(), sets)


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
                values: Mapping[str, str] | None = None, blind: bool = True, tokens: bool = True) -> ComparisonRun:
        """`text` answered by each of `contenders` at once (its skill: a /command, or `skill_name`); the shown path
        ends at the message, below it the answers as columns, shuffled when `blind`. Refused (ChatError, nothing
        changed) for fewer than 2 or more than 4 contenders, a contender that can't be, or models that won't fit."""
        if not MIN_CONTENDERS <= len(contenders) <= MAX_CONTENDERS:
            raise ChatError(f"compare {MIN_CONTENDERS} to {MAX_CONTENDERS} contenders, not {len(contenders)}")
        chat = self.chat
        skill, _ = chat.skill_for(text, skill_name)
        plans = [self._plan(contender, skill) for contender in contenders]
        engines = self._engines_together([plan.model for plan in plans])
        chat.post(text, skill.name, values)  # (refused here: nothing changed)
        chat._owed = False  # (answered here, not by `answer_last`)
        chat.stop()
        question = chat.history[-1]
        started = [self._column(plan, engines[plan.model], question, tokens) for plan in plans]
        shown = Comparison.ordered([column for column, _ in started], blind, random.Random(chat.seeds.random()))
        question["comparison"] = Comparison(shown, blind)
        chat._record_shown()
        if chat.record is not None:
            chat.record.compared(question)
        self.comparing = ComparisonRun(question, [reply for _, reply in started])
        return self.comparing

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

    def _column(self, plan: Plan, engine: Engine, question: ChatMessage, tokens: bool) -> tuple[Column, Reply]:
        """One contender's answer, started below `question` (a sibling of the others; the shown path stays)."""
        try:
            asked = plan.skill.expand(question.get("typed", question["content"]), question.get("values"))
        except SkillError:  # (another version's variables may not take the message's values: its defaults)
            asked = plan.skill.expand(question.get("typed", question["content"]))
        before = list(sent_messages(self.chat.history).values())[:-1]
        request = model_request([*before, {"role": "user", "content": asked}], plan.instructions, plan.skill, plan.settings,
                                overrides=plan.contender.settings)
        seeded, drawn = with_seed(request.settings, self.chat.seeds)
        fitted = engine.prepare(request.messages, seeded)
        stops = request.stop_strings + (self.chat.models.defaults(plan.model).stop_strings if self.chat.models is not None else ())
        generation = engine.generate(fitted, seeded, stops, cache=None, tokens=tokens and engine.exact_prompt)  # (one cache per chat)
        made = Part.made(engine, fitted, seeded, drawn)
        answer: ChatMessage = {"role": "assistant", "content": "", "provenance": self.chat._begin(engine, plan.skill, plan.instructions, made)}
        if fitted.message_notice:
            answer["notice"] = f"Note: {fitted.message_notice}."
        self.chat.tree.add(answer, question["id"])
        if self.chat.record is not None:
            self.chat.record.added(answer, question)
        reply = Reply(generation, answer, made, self.chat.record, self.chat.token_logs, lambda _: None)
        return plan.column(answer["id"]), reply

    # -- after the answers ---------------------------------------------------------------------

    @property
    def shown(self) -> tuple[ChatMessage, Comparison] | None:
        """The comparison of the last message of the user's shown (and its message), if it was compared."""
        question = next((m for m in reversed(self.chat.history) if m["role"] == "user"), None)
        if question is None or "comparison" not in question:
            return None
        return question, question["comparison"]

    def judge(self, outcome: Outcome, winner: int | None = None) -> Comparison:
        """The user's vote on the shown comparison (refused while its answers stream, and once cast)."""
        question, comparison = self._judgeable()
        comparison.vote(outcome, winner)
        if self.chat.record is not None:
            self.chat.record.compared(question)
        return comparison

    def go_on_with(self, index: int) -> Column:
        """Continue with this answer: a preference for column `index` (unless the vote is in: it stays as cast), and the
        chat goes on from its branch, with its model, instructions and settings; the other columns stay as versions."""
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
        self._take_on(column)
        if self.chat.record is not None:
            self.chat.record.compared(question)
        self.chat.last_prompt, self.chat.first_in_view = None, 0
        return column

    def _judgeable(self) -> tuple[ChatMessage, Comparison]:
        shown = self.shown
        if shown is None:
            raise ChatError("no comparison to judge: compare a message first")
        if self.comparing is not None and self.comparing.question is shown[0] and not self.comparing.done:
            raise ChatError("the answers are still coming: judge them once they end (Stop ends them)")
        return shown

    def _take_on(self, column: Column) -> None:
        """The chat takes on what the column changed: its model, instructions and settings."""
        model = column.sets.get("model")
        if isinstance(model, str) and model != self.chat.model and self.chat.models is not None and self.chat.models.find(model):
            self.chat.model = self.chat.models.find(model) or self.chat.model
            loaded = self.chat.models.loaded_engine(self.chat.model)
            if loaded is not None:
                self.chat._switch_engine(loaded)
            if self.chat.record is not None:
                self.chat.record.model(self.chat.model)
        if isinstance(column.sets.get("instructions"), str):
            self.chat.instructions = column.sets["instructions"]
        if isinstance(column.sets.get("settings"), dict):
            self.chat.settings = GenerationSettings.from_json(column.sets["settings"], self.chat.settings)

    def leave(self) -> None:
        """A message sent below a compared one that nobody went on from: the chat goes on from its first column
        (no vote: nobody judged)."""
        shown = self.shown
        if shown is None or self.chat.history[-1] is not shown[0] or not shown[1].columns:
            return
        first = shown[1].columns[0].answer_id
        if first in self.chat.tree.messages:
            self.chat.history[:] = self.chat.tree.path_to(first)
            self.chat._record_shown()

    @property
    def running(self) -> bool:
        return self.comparing is not None and not self.comparing.done

    def stop(self, wait: bool) -> None:
        run = self.comparing
        if run is not None:
            run.cancel()
            if wait:
                run.wait(10.0)
