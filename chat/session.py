"""A chat session: what one browser tab (or one terminal) owns.

History, instructions, settings and the last prompt live here, never in globals. The UI,
the terminal chat and tests drive the same methods: send, retry, undo, clear, stop.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from .context import FittedPrompt
from .conversation import EXTRA_KEYS, is_blank, normalize_messages
from .engine import Stats, StopReason
from .errors import ChatError
from .kvcache import PrefixCache
from .settings import GenerationSettings
from .skills import Skill, SkillBook

RETRY_COMMAND = "/retry"


class Reply:
    """An answer streaming into the session's history. Iterate for text deltas."""

    def __init__(self, session: "ChatSession", generation: Any, answer: dict[str, Any]):
        self.session, self.generation, self.answer = session, generation, answer
        self.finished = False

    @property
    def stats(self) -> Stats:
        return self.generation.stats

    @property
    def fitted(self) -> FittedPrompt:
        return self.generation.fitted

    def cancel(self) -> None:
        self.generation.cancel()

    def __iter__(self) -> Iterator[str]:
        try:
            for delta in self.generation:
                self.answer["content"] += delta
                yield delta
            self.finished = True
        except ChatError as error:
            self.answer["error"] = str(error)  # shown in the chat; the user's message stays for Retry
            raise
        finally:
            if not self.finished and "error" not in self.answer:
                self.generation.close()  # the reader went away (Stop, closed tab): stop the model too
                self.generation.stats.stop_reason = StopReason.CANCELLED
            self.session._done(self)


class ChatSession:
    """One conversation with one engine. Not thread-safe by design: one tab, one session."""

    def __init__(self, engine: Any, skills: SkillBook, instructions: str = "", settings: GenerationSettings | None = None):
        self.engine, self.skills = engine, skills
        self.instructions = instructions
        self.settings = settings or GenerationSettings()
        self.history: list[dict[str, Any]] = []
        self.last_prompt: FittedPrompt | None = None
        self.last_stats: Stats | None = None
        self.kv_cache = PrefixCache()  # this session's last turn, reused by the next (never shared)
        self._current: Reply | None = None
        self._lock = threading.Lock()

    # -- the conversation ---------------------------------------------------------------

    def send(self, text: str, skill_name: str | None = None) -> Reply:
        """Adds the user's message (expanded by the skill) and starts the answer."""
        if text.strip() == RETRY_COMMAND:
            return self.retry()
        if is_blank(text):
            raise ChatError("type a message first")
        skill = self.skill(skill_name)
        self.stop()
        self.history.append({"role": "user", "content": skill.expand(text), "typed": text, "skill": skill.name})
        try:
            return self._answer(skill)
        except ChatError:
            # Nothing was sent (e.g. the instructions fill the context): leave no unanswered message
            # behind, or the next send would make two user turns in a row.
            self.history.pop()
            raise

    def retry(self) -> Reply:
        """A new answer to the last user message, expanded again by the same skill."""
        self.stop()
        while self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        if not self.history:
            raise ChatError("nothing to retry yet: send a message first")
        last = self.history[-1]
        skill = self.skills.get(last["skill"]) if last.get("skill") in self.skills.names() else None
        if skill is not None and "typed" in last:
            last["content"] = skill.expand(last["typed"])
        return self._answer(skill)

    def undo(self) -> str:
        """Removes the last exchange; returns what the user had typed, to edit and resend."""
        self._discard_answer()
        while self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        if not self.history:
            return ""
        last = self.history.pop()
        return last.get("typed", last["content"])

    def clear(self) -> None:
        self._discard_answer()
        self.history.clear()
        self.last_prompt = self.last_stats = None

    def stop(self) -> None:
        """Cancels the answer in progress, if any."""
        current = self._current
        if current is not None:
            current.cancel()
            current.generation.close()

    def _discard_answer(self) -> None:
        """Stops the answer in progress and forgets it: its figures must not reach `last_stats`
        when its stream ends later. (Stop keeps it: the user wants to see where it stopped.)"""
        self.stop()
        self._current = None

    @property
    def busy(self) -> bool:
        return self._current is not None

    # -- what the model sees ----------------------------------------------------------------

    def skill(self, name: str | None) -> Skill:
        return self.skills.default if not name else self.skills.get(name)

    def model_messages(self) -> list[dict[str, Any]]:
        """System instructions + history as the model sees it (failed exchanges left out)."""
        messages = [{"role": "system", "content": self.instructions}] if self.instructions.strip() else []
        for index, message in enumerate(self.history):
            failed = message.get("error") or (
                message["role"] == "user" and index + 1 < len(self.history) and self.history[index + 1].get("error")
            )
            if not failed:
                messages.append({"role": message["role"], "content": message["content"]})
        return messages

    def preview(self, text: str, skill_name: str | None = None) -> FittedPrompt:
        """The prompt the model would get if `text` were sent now (nothing is changed)."""
        skill = self.skill(skill_name)
        messages = self.model_messages() + [{"role": "user", "content": skill.expand(text)}]
        return self.engine.prepare(messages, self.settings.merged(skill.settings))

    # -- saving and loading -------------------------------------------------------------------

    def to_messages(self) -> list[dict[str, Any]]:
        """The conversation in the messages format, instructions first, for saving."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        keep = ("role", "content", *EXTRA_KEYS)  # not UI notes such as errors and notices
        return system + [{k: m[k] for k in keep if k in m} for m in self.history]

    def load_messages(self, data: Any, source: str = "conversation") -> None:
        messages = normalize_messages(data, source)
        self._discard_answer()
        if messages and messages[0]["role"] == "system":
            self.instructions = messages.pop(0)["content"]
        self.history = messages
        self.last_prompt = self.last_stats = None

    # -- internals ----------------------------------------------------------------------------

    def _answer(self, skill: Skill | None) -> Reply:
        settings = self.settings.merged(skill.settings if skill else None)
        fitted = self.engine.prepare(self.model_messages(), settings)
        generation = self.engine.generate(fitted, settings, skill.stop if skill else (), cache=self.kv_cache)
        answer: dict[str, Any] = {"role": "assistant", "content": ""}
        if fitted.notice:
            answer["notice"] = fitted.notice
        self.history.append(answer)
        self.last_prompt = fitted
        reply = Reply(self, generation, answer)
        self._current = reply
        return reply

    def _done(self, reply: Reply) -> None:
        if self._current is not reply:  # an older answer, replaced since: its stats are stale
            return
        self._current = None
        if "error" not in reply.answer:
            self.last_stats = reply.stats
