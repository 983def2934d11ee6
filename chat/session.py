"""A chat session: what one browser tab (or one terminal) owns.

History, instructions, settings and the last prompt live here, never in globals. The UI,
the terminal chat and tests drive the same methods: send, retry, undo, clear, stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import provenance
from .context_window import FittedPrompt
from .messages import EXTRA_KEYS, is_blank
from .engine import Engine, Generation, Stats
from .errors import ChatError
from .reply import INTERRUPTED, Reply
from .settings import GenerationSettings
from .skills import Skill, SkillBook
from .answer_tokens import Alternative, TokenLog, TokenStep
from .tree import ConversationTree

if TYPE_CHECKING:  # (the store imports this module)
    from .store.record import ChatRecord

RETRY_COMMAND = "/retry"
TOKEN_LOGS_KEPT = 16  # answers' token data held in memory per session, where the store keeps all (a few MB each)


class ChatSession:
    """One conversation with one engine. Not thread-safe by design: one tab, one session.

    The conversation is a tree (`tree`: every version of every message); `history` is the path it
    shows, the plain messages list the page, the engine and the files see.
    """

    def __init__(self, engine: Engine, skills: SkillBook, instructions: str = "", settings: GenerationSettings | None = None):
        self.engine, self.skills = engine, skills
        self.instructions = instructions
        self.settings = settings or GenerationSettings()
        self.tree = ConversationTree()
        self.history: list[dict[str, Any]] = []
        self.last_prompt: FittedPrompt | None = None
        self.last_stats: Stats | None = None
        self.first_in_view = 0  # history index of the first message the model saw last turn (trimming)
        self.kv_cache = engine.new_cache()  # what the engine reuses of this session's last turn (never shared)
        self.record: ChatRecord | None = None  # where the conversation is written as it happens (None: nowhere)
        self.owner = ""  # whose chats these are, as the store knows them (set by the page or the terminal)
        self.focus: str | None = None  # the id of the message the user picked (its versions, its provenance)
        self.record_tokens = False  # answers record their tokens' probabilities (the token view is open)
        self.token_pick: tuple[str, int] | None = None  # (answer id, token position) picked in the token view
        self.token_logs: dict[str, TokenLog] = {}  # answer id → its token data (read from the store when first asked)
        self._current: Reply | None = None
        self._owed = False  # a message was taken and `answer_last` has not run for it yet
        self.last_taken = 0  # the number of the page's last message taken (see web/handlers.post)

    # -- the conversation ---------------------------------------------------------------

    def send(self, text: str, skill_name: str | None = None) -> Reply:
        """Adds the user's message (expanded by the skill) and starts the answer."""
        self.post(text, skill_name)
        reply = self.answer_last()
        assert reply is not None  # `post` left an unanswered message (or raised)
        return reply

    def retry(self) -> Reply:
        """A new answer to the last user message, beside the old one (a version), expanded again by the same skill."""
        self._take_back_answer()
        reply = self.answer_last()
        assert reply is not None
        return reply

    def post(self, text: str, skill_name: str | None = None) -> None:
        """Takes the user's message into the chat (or `/retry`) without waiting for the model.

        The answer in progress is told to stop, not waited for, so a message is taken at once
        however long the model's current step is; `answer_last` then answers it. A message that
        arrives before the previous one got its answer leaves that one unanswered (shown so): the
        chat stays question, answer, question, which every chat template accepts.
        """
        if text.strip() == RETRY_COMMAND:
            self._take_back_answer()
            self._owed = True
            return
        if is_blank(text):
            raise ChatError("type a message first")
        skill = self.skill(skill_name)
        self._interrupt()
        if self.history and self.history[-1]["role"] == "user":
            self._append({"role": "assistant", "content": "", INTERRUPTED: True})
        self._append({"role": "user", "content": skill.expand(text), "typed": text, "skill": skill.name})
        self._owed = True

    @property
    def awaiting_answer(self) -> bool:
        """A message was taken (`post`) and its answer has not started yet: `answer_last` comes next."""
        return self._owed and bool(self.history) and self.history[-1]["role"] == "user"

    def answer_last(self) -> Reply | None:
        """Starts the answer to the last message if it is the user's; None if it needs none.

        A start that fails (e.g. the instructions fill the context) is kept in the chat as a failed
        answer, like a failure while generating: the message stays, for Retry.
        """
        self._owed = False
        if not self.history or self.history[-1]["role"] != "user":
            return None
        self.stop()  # an answer told to stop by `post` ends first: one model run per session
        last = self.history[-1]
        skill = self._known_skill(last.get("skill"))
        if skill is not None and "typed" in last:
            last["content"] = skill.expand(last["typed"])
        return self._answer_or_fail(lambda: self._answer(skill))

    def edit(self, index: int, text: str) -> None:
        """A new version of the user message at `index` (the old one and all that followed it stay,
        a step away with Previous version); `answer_last` answers it."""
        old = self.history[index] if 0 <= index < len(self.history) else None
        if old is None or old["role"] != "user":
            raise ChatError("only your own messages can be edited")
        if is_blank(text):
            raise ChatError("type a message first")
        skill = self._known_skill(old.get("skill")) or self.skills.default
        self._discard_answer()
        self.history[:] = self.history[:index]  # in place: a stopped answer's stream draws from this list
        self._append({"role": "user", "content": skill.expand(text), "typed": text, "skill": skill.name})
        self.focus = self.history[-1]["id"]

    def continue_answer(self) -> Reply:
        """More of the last answer, in the same message: where it stopped (its token limit, or Stop)."""
        self.stop()
        answer = self.history[-1] if self.history else None
        if answer is None or answer["role"] != "assistant" or answer.get("error") or not answer["content"].strip():
            raise ChatError("nothing to continue: the last message is not an answer with text")
        skill = self._known_skill(self.history[-2].get("skill")) if len(self.history) > 1 else None
        settings, drawn = provenance.with_seed(self.settings.merged(skill.settings if skill else None))
        generation, made = self._continuation(settings, drawn, skill, self.instructions)
        answer.pop(INTERRUPTED, None)
        document = answer.setdefault("provenance", provenance.new(self.engine, skill.name if skill else None, self.instructions, {}))
        document["parts"].append(made)
        return self._started(Reply(self, generation, answer, made))

    def reproduce(self) -> Reply:
        """A new version of the last answer, made as it was: its model, skill, instructions, settings
        and seed (each part of a continued answer with its own). Same model: the same text."""
        self.stop()
        answer = self.history[-1] if self.history else None
        document = (answer or {}).get("provenance") or {}
        parts = [part for part in document.get("parts", []) if "settings" in part]
        if answer is None or answer["role"] != "assistant" or not parts or not document.get("parts"):
            raise ChatError("nothing to reproduce: the last answer has no record of how it was made")
        skill = self._known_skill(document.get("skill"))
        instructions = document.get("instructions", self.instructions)
        settings = [provenance.settings_of(part, self.settings) for part in parts]
        fork = document["parts"][0].get("fork")
        if fork is not None:  # it began with a token the user chose: so does its reproduction
            reply = self._fork(len(self.history) - 1, fork, skill, instructions, [(s, False) for s in settings])
            assert reply is not None
            reply.answer["provenance"]["reproduces"] = answer["id"]
            return reply
        self._take_back_answer()
        self.stop()

        def continuation(settings: GenerationSettings) -> Callable[[], tuple[Generation, dict[str, Any]]]:
            return lambda: self._continuation(settings, False, skill, instructions)

        then = tuple(continuation(later) for later in settings[1:])
        reply = self._answer_or_fail(lambda: self._answer(skill, settings[0], instructions, answer["id"], then))
        if parts[0].get("prompt_sha256") not in (None, reply.made["prompt_sha256"]):
            reply.answer["notice"] = ("Note: the prompt is not the one recorded (another model, template or skill file?): "
                                      "the text may differ.")
        return reply

    def take_token(self, index: int, position: int, choice: Alternative) -> Reply | None:
        """A new version of the answer at `index` that goes on from another token: the same tokens up to
        `position`, then `choice` (one of that token's alternatives), then the model continues.
        None when the choice ends the answer (the end-of-turn token): the new version is complete."""
        old = self.history[index] if 0 <= index < len(self.history) else None
        log = self.tokens_of(old) if old is not None and old["role"] == "assistant" else None
        if old is None or log is None or not 0 <= position < len(log.steps):
            raise ChatError("that answer has no token data to choose from")
        taken = log.steps[position]
        chosen = TokenStep(choice.id, "" if choice.special else choice.text, taken.dists)  # the same distributions
        kept = TokenLog([*log.steps[:position], chosen], log.distributions)
        text = kept.text if position else kept.text.lstrip()
        fork = {"from": old["id"], "token": position, "instead_of": taken.text, "chosen": choice.text, "special": choice.special,
                "logprob": choice.logprob, "text": text}
        document = old.get("provenance") or {}
        skill = self._known_skill(document.get("skill"))
        settings = provenance.with_seed(self.settings.merged(skill.settings if skill else None))
        return self._fork(index, fork, skill, document.get("instructions", self.instructions), [settings],
                          kept if text == kept.text else None)

    def _fork(self, index: int, fork: dict[str, Any], skill: Skill | None, instructions: str,
              settings: list[tuple[GenerationSettings, bool]], log: TokenLog | None = None) -> Reply | None:
        """A new version of the answer at `index` that begins with `fork["text"]`, continued by the model
        with each of `settings` in turn (none when the fork ended the answer)."""
        self._discard_answer()
        self.history[:] = self.history[:index]
        answer: dict[str, Any] = {"role": "assistant", "content": fork["text"],
                                  "provenance": provenance.new(self.engine, skill.name if skill else None, instructions, {"fork": fork})}
        self._append(answer)
        self.focus = answer["id"]
        if log is not None:
            self.keep_tokens(answer, log)
        if fork["special"] or not fork["text"].strip() or not settings:
            if self.record is not None:
                self.record.ended(answer, answer["provenance"])
            return None

        def continuation(given: tuple[GenerationSettings, bool]) -> Callable[[], tuple[Generation, dict[str, Any]]]:
            return lambda: self._continuation(given[0], given[1], skill, instructions)

        generation, made = continuation(settings[0])()
        answer["provenance"]["parts"].append(made)
        return self._started(Reply(self, generation, answer, made, tuple(continuation(later) for later in settings[1:])))

    def tokens_of(self, message: dict[str, Any]) -> TokenLog | None:
        """The answer's token data, if it was recorded (from the store the first time it is asked for)."""
        message_id = message.get("id")
        if message_id is None:
            return None
        if message_id not in self.token_logs and self.record is not None:
            stored = self.record.stored_tokens(message_id)
            if stored is not None:
                self.token_logs[message_id] = stored
        return self.token_logs.get(message_id)

    def keep_tokens(self, answer: dict[str, Any], log: TokenLog) -> None:
        self.token_logs.pop(answer["id"], None)
        self.token_logs[answer["id"]] = log  # (newest last)
        if self.record is not None:
            self.record.tokens(answer, log)
            while len(self.token_logs) > TOKEN_LOGS_KEPT:  # the store has them: memory keeps the latest
                self.token_logs.pop(next(iter(self.token_logs)))

    def switch(self, index: int, step: int) -> None:
        """Shows another version of the message at `index` (`step` -1: the previous, +1: the next),
        with the branch that followed it as it was last shown."""
        if not 0 <= index < len(self.history):
            raise ChatError("no such message")
        self._discard_answer()
        message = self.history[index]
        self.history[:] = self.tree.path_to(self.tree.switch(message["id"], step))
        self.focus = self.history[index]["id"]
        self._record_shown()
        self.last_prompt, self.first_in_view = None, 0

    def versions(self) -> list[tuple[int, int, int]]:
        """(index, k, n) for each shown message that has other versions: it is version k of n."""
        found = []
        for index, message in enumerate(self.history):
            k, n = self.tree.version(message["id"])
            if n > 1:
                found.append((index, k, n))
        return found

    def focused_index(self) -> int | None:
        """The history index of the message the user picked, if it is still shown."""
        ids = [m["id"] for m in self.history]
        return ids.index(self.focus) if self.focus in ids else None

    def _take_back_answer(self) -> None:
        """Takes the last answer off the shown path, stopping it (it stays in the tree: a version),
        so that `answer_last` answers that message again."""
        self._interrupt()
        while self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        if not self.history:
            raise ChatError("nothing to retry yet: send a message first")
        self._record_shown()

    # Undo, Clear, switching versions and loading a file change the chat *before* they stop the answer
    # in progress: its stream draws a last page as soon as the model ends, and that page must show the
    # changed chat. Undo and Clear hide; nothing leaves the tree (a message sent next is a new version).

    def undo(self) -> str:
        """Hides the last exchange; returns what the user had typed, to edit and resend."""
        while self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        last = self.history.pop() if self.history else None
        self._record_shown()
        self._discard_answer()
        return "" if last is None else last.get("typed", last["content"])

    def clear(self) -> None:
        self.history.clear()
        self._record_shown()
        self._discard_answer()
        self.last_prompt = self.last_stats = None
        self.first_in_view = 0

    def new_conversation(self) -> None:
        """An empty conversation of its own (the one left stays as it was, in the store if it is there)."""
        self.record = None  # first: clearing must not empty the chat being left
        self.clear()
        self.tree, self.focus, self.token_logs = ConversationTree(), None, {}

    def stop(self) -> None:
        """Cancels the answer in progress, if any, and waits for the model to finish its step."""
        current = self._current
        if current is not None:
            current.cancel()
            current.generation.close()

    def _interrupt(self) -> None:
        """Tells the answer in progress to stop, without waiting for it."""
        current = self._current
        if current is not None:
            current.cancel()

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

    def _known_skill(self, name: str | None) -> Skill | None:
        return self.skills.get(name) if name in self.skills.names() else None

    def model_messages(self, instructions: str | None = None) -> list[dict[str, Any]]:
        """System instructions + history as the model sees it (failed exchanges left out)."""
        instructions = self.instructions if instructions is None else instructions
        messages = [{"role": "system", "content": instructions}] if instructions.strip() else []
        return messages + [{"role": m["role"], "content": m["content"]} for m in self._sent_history().values()]

    def _sent_history(self) -> dict[int, dict[str, Any]]:
        """The history messages the model is sent, by their index in the history (not failed exchanges)."""
        sent = {}
        for index, message in enumerate(self.history):
            failed = message.get("error") or (
                message["role"] == "user" and index + 1 < len(self.history) and self.history[index + 1].get("error")
            )
            if not failed:
                sent[index] = message
        return sent

    @property
    def out_of_view(self) -> int:
        """How many of the oldest history messages the model no longer saw last turn (0: it saw all)."""
        return self.first_in_view if self.first_in_view < len(self.history) else 0

    def preview(self, text: str, skill_name: str | None = None) -> FittedPrompt:
        """The prompt the model would get if `text` were sent now (nothing is changed)."""
        skill = self.skill(skill_name)
        messages = self.model_messages() + [{"role": "user", "content": skill.expand(text)}]
        return self.engine.prepare(messages, self.settings.merged(skill.settings))

    # -- saving and loading -------------------------------------------------------------------

    def to_messages(self) -> list[dict[str, Any]]:
        """The shown conversation in the messages format, instructions first."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        keep = ("role", "content", *EXTRA_KEYS)  # not UI notes such as errors and notices
        return system + [{k: m[k] for k in keep if k in m} for m in self.history]

    def load_messages(self, data: Any, source: str = "conversation") -> None:
        """Shows a conversation from a file: a messages list (one path), or this app's file with every version."""
        from .files import read_conversation

        instructions, tree, path = read_conversation(data, source)
        if instructions is not None:
            self.instructions = instructions
        self.tree = tree
        self.history[:] = path  # in place: the stream of the answer stopped below draws from this list
        self.record = None  # a loaded file is not the stored chat (the caller may `start_record` a new one)
        self._discard_answer()
        self.last_prompt = self.last_stats = None
        self.first_in_view, self.focus, self.token_logs = 0, None, {}

    def open(self, record: "ChatRecord", tree: ConversationTree, history: list[dict[str, Any]], instructions: str,
             settings: GenerationSettings) -> None:
        """Shows a stored chat (from `chat.store.record.tree_of`); what happens next is written to `record`."""
        self._discard_answer()
        self.tree = tree
        self.history[:] = history
        self.instructions, self.settings, self.record = instructions, settings, record
        self.last_prompt = self.last_stats = None
        self.first_in_view, self.focus, self.token_logs = 0, None, {}

    def start_record(self, record: "ChatRecord") -> None:
        """Writes the chat as it is (a loaded file: every version) to a new `record`, and what happens next."""
        self.record = record
        for message in self.tree.ordered():
            parent_id = self.tree.parent[message["id"]]
            record.added(message, self.tree.messages.get(parent_id) if parent_id else None)
        self._record_shown()

    # -- internals ----------------------------------------------------------------------------

    def _append(self, message: dict[str, Any]) -> None:
        """Adds `message` to the chat (after the last shown one), and to its record."""
        parent = self.history[-1] if self.history else None
        self.tree.add(message, parent["id"] if parent else None)
        self.history.append(message)
        if self.record is not None:
            self.record.added(message, parent)

    def _record_shown(self) -> None:
        self.tree.shown(self.history)
        if self.record is not None:
            self.record.shown(self.history)

    def _answer_or_fail(self, start: Callable[[], Reply]) -> Reply:
        try:
            return start()
        except ChatError as error:
            self._append({"role": "assistant", "content": "", "error": str(error)})
            raise

    def _answer(self, skill: Skill | None, settings: GenerationSettings | None = None, instructions: str | None = None,
                reproduces: str | None = None, then: tuple[Callable[[], tuple[Generation, dict[str, Any]]], ...] = ()) -> Reply:
        settings, drawn = provenance.with_seed(settings or self.settings.merged(skill.settings if skill else None))
        instructions = self.instructions if instructions is None else instructions
        fitted = self.engine.prepare(self.model_messages(instructions), settings)
        generation = self.engine.generate(fitted, settings, skill.stop if skill else (), cache=self.kv_cache, tokens=self.record_tokens)
        made = provenance.part(self.engine, fitted, settings, drawn)
        answer: dict[str, Any] = {"role": "assistant", "content": "",
                                  "provenance": provenance.new(self.engine, skill.name if skill else None, instructions, made, reproduces)}
        if fitted.message_notice:
            answer["notice"] = f"Note: {fitted.message_notice}."
        # One notice for left-out history, kept current: where the part the model sees now begins.
        self.first_in_view = list(self._sent_history())[fitted.dropped_messages]
        self._append(answer)
        if self.record is not None:
            self.record.settings(self.instructions, skill.name if skill else None, self.settings)
        return self._started(Reply(self, generation, answer, made, then))

    def _continuation(self, settings: GenerationSettings, drawn: bool, skill: Skill | None,
                      instructions: str) -> tuple[Generation, dict[str, Any]]:
        """A generation for more of the last shown answer, and its provenance part."""
        fitted = self.engine.prepare(self.model_messages(instructions), settings, continues=True)
        generation = self.engine.generate(fitted, settings, skill.stop if skill else (), cache=self.kv_cache, tokens=self.record_tokens)
        return generation, provenance.part(self.engine, fitted, settings, drawn)

    def _started(self, reply: Reply) -> Reply:
        self.last_prompt = reply.fitted
        self._current = reply
        return reply

    def _done(self, reply: Reply) -> None:
        if self._current is not reply:  # an older answer, replaced since: its stats are stale
            return
        self._current = None
        if "error" not in reply.answer:
            self.last_stats = reply.stats
