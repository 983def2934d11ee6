"""A chat session: one conversation with one engine, as a browser tab or a terminal has it.

History, instructions, settings, the KV cache and the last prompt live here, never in globals. The
page (through its tab, chat/web/tabs.py), the terminal chat and tests drive the same methods: send,
retry, continue, reproduce, edit, switch, undo, clear, stop. What only a page shows (which message
was clicked, which token picked) is the tab's, not the session's.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Mapping

from .answer_tokens import Alternative, TokenLog
from .attachments import Attachment, split_attachment, with_attachment
from .comparing import RETRY_COMMAND, Comparisons
from .context_window import FittedPrompt
from .engine import Engine, Generation, Stats
from .errors import ChatError, ModelUnloaded, SkillError
from .files import read_conversation
from .messages import Message, is_blank
from .models import ModelList, Progress
from .provenance import Fork, Part, Provenance, with_seed
from .recording import ConversationRecord, TokenLogs
from .reply import NextPart, Reply
from .request import ModelRequest, answer_stop_strings, model_messages, model_request, sent_messages
from .settings import GenerationSettings
from .skills import Skill, SkillBook, split_command
from .skills_file import skill_from_data
from .tree import ChatMessage, ConversationTree



class ChatSession:
    """One conversation with one engine. Not thread-safe by design: one tab, one session.

    The conversation is a tree (`tree`: every version of every message); `history` is the path it
    shows, the plain messages list the page, the engine and the files see. Methods that start an
    answer take `tokens`: record each token's probabilities too (the token view, `/tokens`).
    `seeds` draws the seed of each sampled answer (recorded with it); by default, from the OS.
    `models`: the app's model list, from which `use_model` picks the chat's model (`model`); `engine` is its
    engine as the chat last got it, asked for again at each answer (the model may have been unloaded since).
    `skills`: a book, or where to get the book now (a user's skills change while the chat goes on).
    """

    def __init__(self, engine: Engine, skills: SkillBook | Callable[[], SkillBook], instructions: str = "",
                 settings: GenerationSettings | None = None, seeds: random.Random | None = None, models: ModelList | None = None):
        self.engine = engine
        self._skills = skills if callable(skills) else (lambda: skills)
        self.models = models
        self.model = engine.name  # the chat's model: its name in `models`
        self.instructions = instructions
        self.settings = settings or GenerationSettings()
        self.seeds = seeds or random.Random()
        self.tree = ConversationTree()
        self.history: list[ChatMessage] = []
        self.last_prompt: FittedPrompt | None = None
        self.prompt_engine = engine  # the engine that made `last_prompt` (its tokenizer reads it; its window bounds it)
        self.last_stats: Stats | None = None
        self.first_in_view = 0  # history index of the first message the model saw last turn (trimming)
        self.kv_cache = engine.new_cache()  # what the engine reuses of this session's last turn (never shared)
        self.record = None  # where the conversation is written as it happens (None: nowhere)
        self._current: Reply | None = None
        self._owed = False  # a message was taken and `answer_last` has not run for it yet
        self.comparisons = Comparisons(self)  # one message answered side by side (chat/comparing.py)

    @property
    def skills(self) -> SkillBook:
        """The skills this chat can use now: the skills file's and, on the page, its owner's own (saved in any tab)."""
        return self._skills()

    @property
    def record(self) -> ConversationRecord | None:
        return self._record

    @record.setter
    def record(self, record: ConversationRecord | None) -> None:
        self._record = record
        self.token_logs = TokenLogs(record)  # each answer's token data, kept beside the record

    # -- the model ------------------------------------------------------------------------

    def use_model(self, name: str, progress: Progress | None = None) -> None:
        """The chat answers with `name` from its next answer on (loaded now if it isn't), with the model's
        defaults (instructions, settings) where it has them. The conversation goes on as it is."""
        if self.models is None:
            if name == self.model:
                return
            raise ChatError("this app has one model")
        found = self.models.find(name)
        if found is None:
            raise ChatError(f"no model called {name!r}; the list has: {', '.join(self.models.names())}")
        self._switch_engine(self.models.engine(found, progress))
        self.model = found
        self.instructions, self.settings = self.models.defaults(found).applied(self.instructions, self.settings)
        if self.record is not None:
            self.record.model(found)

    def _engine_now(self, model: str | None = None, again: bool = False) -> Engine:
        """The engine of `model` (default: the chat's), loaded again if it was unloaded since (`again`: it was)."""
        if self.models is None:
            return self.engine
        name = model or self.model
        engine = self.models.engine(name) if (again or model or not self._usable(self.engine)) else self.engine
        if model is None:
            self._switch_engine(engine)
        return engine

    def _usable(self, engine: Engine) -> bool:
        return self.models is not None and self.models.loaded_engine(self.model) is engine

    def _switch_engine(self, engine: Engine) -> None:
        if engine is not self.engine:
            self.engine = engine
            self.kv_cache = engine.new_cache()  # a cache belongs to the model that made it

    def _generate(self, engine: Engine, fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
                  tokens: bool, model: str | None = None) -> tuple[Engine, Generation]:
        """Starts the answer; a model unloaded since the chat got it is loaded again (once), never an error."""
        stops = stop_strings + (self.models.defaults(model or self.model).stop_strings if self.models is not None else ())
        try:
            generation = engine.generate(fitted, settings, stops, cache=self._cache_for(engine), tokens=tokens)
        except ModelUnloaded:
            engine = self._engine_now(model, again=True)
            generation = engine.generate(fitted, settings, stops, cache=self._cache_for(engine), tokens=tokens)
        self.prompt_engine = engine
        return engine, generation

    def _cache_for(self, engine: Engine) -> Any:
        return self.kv_cache if engine is self.engine else None  # another model's answer (Reproduce) uses no cache

    # -- the conversation ---------------------------------------------------------------

    def send(self, text: str, skill_name: str | None = None, tokens: bool = False, values: Mapping[str, str] | None = None,
             attachment: Attachment | None = None) -> Reply:
        """Adds the user's message (expanded by the skill, with `values` for its variables) and starts the answer."""
        self.post(text, skill_name, values, attachment)
        return self._started_answer(tokens)

    def retry(self, tokens: bool = False) -> Reply:
        """A new answer to the last user message, beside the old one (a version), expanded again by the same skill."""
        self.take_back_answer()
        return self._started_answer(tokens)

    def post(self, text: str, skill_name: str | None = None, values: Mapping[str, str] | None = None,
             attachment: Attachment | None = None) -> None:
        """Takes the user's message into the chat (or `/retry`) without waiting for the model.

        A message that starts with a skill's /command (`/summarize Long text ...`) uses that skill, for
        this message, with its variables' defaults; `values`: the variables of `skill_name`'s skill (blank or
        missing: their defaults). `attachment`: a file whose text is the message's material (chat/attachments.py).

        The answer in progress is told to stop, not waited for, so a message is taken at once
        however long the model's current step is; `answer_last` then answers it. A message that
        arrives before the previous one got its answer leaves that one unanswered (shown so): the
        chat stays question, answer, question, which every chat template accepts.
        """
        if text.strip() == RETRY_COMMAND:
            self.take_back_answer()
            return
        skill, said = self.skill_for(text, skill_name)
        commanded = split_command(text) is not None
        said = with_attachment(said, attachment) if attachment is not None else said
        if is_blank(said):
            raise ChatError(f"type a message after /{skill.command}" if commanded else "type a message first")
        if commanded:  # a /command: its skill, with its variables' defaults (the form is the menu skill's)
            values = None
        message = self._user_message(skill, said, values, attachment.name if attachment else None)  # (refused here: nothing changed)
        self.comparisons.leave()  # (below a compared message: from the answer voted better, or refused)
        self._interrupt()
        if self.history and self.history[-1]["role"] == "user":
            self._append({"role": "assistant", "content": "", "interrupted": True})
        self._append(message)
        self._owed = True

    def skill_for(self, text: str, skill_name: str | None = None) -> tuple[Skill, str]:
        """(the skill a message uses, its text): the /command it starts with, or else `skill_name` (None: the default)."""
        command = split_command(text)
        if command is None:
            return self.skills.pick(skill_name), text
        return self.skills.by_command(command[0]), command[1]

    @staticmethod
    def _user_message(skill: Skill, text: str, values: Mapping[str, str] | None, attached: str | None = None) -> ChatMessage:
        message: ChatMessage = {"role": "user", "content": skill.expand(text, values), "typed": text, "skill": skill.name}
        if skill.variables:
            message["values"] = skill.values(values)
        if attached:
            message["attached"] = attached
        return message

    def take_back_answer(self) -> None:
        """Retry's first step: the last answer stops and leaves the shown path (it stays in the tree: a
        version), so that `answer_last` answers that message again."""
        if self.comparisons.undecided:  # (a new answer would show as a version beside the columns: their names with it)
            raise ChatError("the last message was answered side by side: continue with one of its answers first, "
                            "or compare it again")
        self._interrupt()
        while self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        if not self.history:
            raise ChatError("nothing to retry yet: send a message first")
        self._record_shown()
        self._owed = True

    @property
    def awaiting_answer(self) -> bool:
        """A message was taken (`post`) and its answer has not started yet: `answer_last` comes next."""
        return self._owed and bool(self.history) and self.history[-1]["role"] == "user"

    def answer_last(self, tokens: bool = False) -> Reply | None:
        """Starts the answer to the last message if it is the user's; None if it needs none.

        A start that fails (e.g. the instructions fill the context) is kept in the chat as a failed
        answer, like a failure while generating: the message stays, for Retry.
        """
        self._owed = False
        if not self.history or self.history[-1]["role"] != "user":
            return None
        self.stop()  # an answer told to stop by `post` ends first: one model run per session
        last = self.history[-1]
        skill = self.skills.find(last.get("skill"))
        if skill is not None and "typed" in last:
            last["content"] = self._expanded_again(skill, last)
        return self._answer_or_fail(lambda: self._answer(skill, tokens))

    @staticmethod
    def _expanded_again(skill: Skill, message: ChatMessage) -> str:
        """The message expanded by its skill as the skill is now (Retry: a new answer, now); as it was when its values
        no longer fit the skill (edited since)."""
        try:
            return skill.expand(message["typed"], message.get("values"))
        except SkillError:
            return message["content"]

    def edit(self, index: int, text: str) -> None:
        """A new version of the user message at `index` (the old one and all that followed it stay,
        a step away with Previous version); `answer_last` answers it."""
        old = self.history[index] if 0 <= index < len(self.history) else None
        if old is None or old["role"] != "user":
            raise ChatError("only your own messages can be edited")
        if is_blank(text):
            raise ChatError("type a message first")
        skill = self.skills.find(old.get("skill")) or self.skills.default
        attached = old.get("attached")
        if attached:  # the chat shows the file by its name: an edit of the text keeps the file
            text = f"{text.rstrip()}\n\n{split_attachment(old['typed'], attached)[1]}".lstrip("\n")
        message = self._user_message(skill, text, old.get("values"), attached)
        self._discard_answer()
        self.history[:] = self.history[:index]  # in place: a stopped answer's stream draws from this list
        self._append(message)

    def continue_answer(self, tokens: bool = False) -> Reply:
        """More of the last answer, in the same message: where it stopped (its token limit, or Stop)."""
        self.stop()
        answer = self.history[-1] if self.history else None
        if answer is None or answer["role"] != "assistant" or answer.get("error") or not answer["content"].strip():
            raise ChatError("nothing to continue: the last message is not an answer with text")
        skill = self.skills.find(self.history[-2].get("skill")) if len(self.history) > 1 else None
        settings, drawn = with_seed(self.settings.merged(skill.settings if skill else None), self.seeds)
        generation, made = self._continuation(settings, drawn, skill, self.instructions, tokens)
        answer.pop("interrupted", None)
        answer.setdefault("provenance", self._begin(self.engine, skill, self.instructions)).parts.append(made)
        return self._started(self._reply(generation, answer, made))

    def reproduce(self, tokens: bool = False) -> Reply:
        """A new version of the last answer, made as it was: its model, skill, instructions, settings
        and seed (each part of a continued answer with its own). Same model: the same text."""
        self.stop()
        answer = self.history[-1] if self.history else None
        provenance = answer.get("provenance") if answer is not None and answer["role"] == "assistant" else None
        if answer is None or provenance is None or not provenance.parts:
            raise ChatError("nothing to reproduce: the last answer has no record of how it was made")
        skill = self._recorded_skill(provenance)
        settings = [part.settings_in(self.settings) for part in provenance.parts]
        found = self.models.find(provenance.model) if self.models is not None else None  # its model, where the list has it
        model = None if found == self.model else found
        if provenance.fork is not None:  # it began with a token the user chose: so does its reproduction
            reply = self._fork(len(self.history) - 1, provenance.fork, skill, provenance.instructions,
                               [(s, False) for s in settings], tokens=tokens, model=model)
            assert reply is not None
            reply.answer["provenance"].reproduces = answer["id"]
            return reply
        self.take_back_answer()
        self.stop()
        question = self.history[-1]
        if skill is not None and "typed" in question and provenance.skill_definition is not None:  # its version's prompt
            question["content"] = skill.expand(question["typed"], provenance.values or question.get("values"))
        then = tuple(self._next_part(later, False, skill, provenance.instructions, tokens, model) for later in settings[1:])
        reply = self._answer_or_fail(lambda: self._answer(skill, tokens, settings[0], provenance.instructions, answer["id"], then,
                                                          model))
        if provenance.parts[0].prompt_sha256 not in ("", reply.made.prompt_sha256):
            reply.answer["notice"] = ("Note: the prompt is not the one recorded (another model, template or skill file?): "
                                      "the text may differ.")
        return reply

    def take_token(self, index: int, position: int, choice: Alternative, tokens: bool = False) -> Reply | None:
        """A new version of the answer at `index` that goes on from another token: the same tokens up to
        `position`, then `choice` (one of that token's alternatives), then the model continues.
        None when the choice ends the answer (the end-of-turn token): the new version is complete."""
        old = self.history[index] if 0 <= index < len(self.history) else None
        log = self.token_logs.of(old) if old is not None and old["role"] == "assistant" else None
        if old is None or log is None or not 0 <= position < len(log.steps):
            raise ChatError("that answer has no token data to choose from")
        fork, kept = Fork.taking(old["id"], log, position, choice)
        provenance = old.get("provenance")
        skill = self.skills.find(provenance.skill if provenance else None)
        instructions = provenance.instructions if provenance else self.instructions
        settings = with_seed(self.settings.merged(skill.settings if skill else None), self.seeds)
        return self._fork(index, fork, skill, instructions, [settings], kept, tokens)

    def _fork(self, index: int, fork: Fork, skill: Skill | None, instructions: str,
              settings: list[tuple[GenerationSettings, bool]], log: TokenLog | None = None, tokens: bool = False,
              model: str | None = None) -> Reply | None:
        """A new version of the answer at `index` that begins with `fork.text`, continued by the model
        with each of `settings` in turn (none when the fork ended the answer)."""
        self._discard_answer()
        self.history[:] = self.history[:index]
        answer: ChatMessage = {"role": "assistant", "content": fork.text,
                               "provenance": self._begin(self._engine_now(model), skill, instructions, fork=fork)}
        self._append(answer)
        if log is not None:
            self.token_logs.keep(answer, log)
        if fork.special or not fork.text.strip() or not settings:
            if self.record is not None:
                self.record.ended(answer)
            return None
        first, *later = (self._next_part(given, drawn, skill, instructions, tokens, model) for given, drawn in settings)
        generation, made = first()
        answer["provenance"].parts.append(made)
        return self._started(self._reply(generation, answer, made, tuple(later)))

    def switch(self, index: int, step: int) -> None:
        """Shows another version of the message at `index` (`step` -1: the previous, +1: the next),
        with the branch that followed it as it was last shown."""
        if not 0 <= index < len(self.history):
            raise ChatError("no such message")
        self._discard_answer()
        message = self.history[index]
        self.history[:] = self.tree.path_to(self.tree.switch(message["id"], step))
        self._record_shown()
        self.last_prompt, self.first_in_view = None, 0

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
        self.tree = ConversationTree()

    def stop(self) -> None:
        """Cancels the answer in progress, if any, and waits for the model to finish its step."""
        current = self._current
        if current is not None:
            current.cancel()
            current.generation.close()
        self.comparisons.stop(wait=True)

    def _interrupt(self) -> None:
        """Tells the answer in progress to stop, without waiting for it."""
        current = self._current
        if current is not None:
            current.cancel()
        self.comparisons.stop(wait=False)

    def _discard_answer(self) -> None:
        """Stops the answer in progress and forgets it: its figures must not reach `last_stats`
        when its stream ends later. (Stop keeps it: the user wants to see where it stopped.)"""
        self.stop()
        self._current = None
        self.comparisons.comparing = None

    @property
    def answering(self) -> Reply | None:
        """The answer in progress, if any."""
        return self._current

    @property
    def busy(self) -> bool:
        return self._current is not None or self.comparisons.running

    # -- what the model sees ----------------------------------------------------------------

    def model_messages(self, instructions: str | None = None) -> list[Message]:
        """System instructions + history as the model sees it (failed exchanges left out)."""
        return model_messages(list(sent_messages(self.history).values()), self.instructions if instructions is None else instructions)

    @property
    def out_of_view(self) -> int:
        """How many of the oldest history messages the model no longer saw last turn (0: it saw all)."""
        return self.first_in_view if self.first_in_view < len(self.history) else 0

    def preview(self, text: str, skill_name: str | None = None, values: Mapping[str, str] | None = None,
                attachment: Attachment | None = None) -> FittedPrompt:
        """The prompt the model would get if `text` were sent now (nothing is changed)."""
        skill, said = self.skill_for(text, skill_name)
        said = with_attachment(said, attachment) if attachment is not None else said
        message: Message = {"role": "user", "content": skill.expand(said, values)}
        request = model_request([*sent_messages(self.history).values(), message], self.instructions, skill, self.settings)
        return self._engine_now().prepare(request.messages, request.settings)

    def check_fits(self, text: str, skill_name: str | None, values: Mapping[str, str] | None, attachment: Attachment) -> None:
        """Refuses (ChatError, with the numbers) a message with an attached file that would be cut to fit the model's
        context: a file's end left out silently would be summarized as if it were all."""
        fitted = self.preview(text, skill_name, values, attachment)
        if fitted.message_trimmed:
            window = self.engine.context_window
            raise ChatError(f"{attachment.name} does not fit: with it the prompt would be {fitted.wanted:,} tokens, and "
                            f"{self.model} takes at most {fitted.room:,} (its {window:,}-token context less "
                            f"{window - fitted.room:,} kept for the answer). Attach a shorter file or a part of it, or pick "
                            "a model with a larger context")

    def trial_prompt(self, skill: Skill, text: str, values: Mapping[str, str] | None = None) -> FittedPrompt:
        """The prompt of `text` sent with `skill` (saved or not) as the first message of a chat with these instructions."""
        request = self._trial_request(skill, text, values)
        return self._engine_now().prepare(request.messages, request.settings)

    def trial(self, skill: Skill, text: str, values: Mapping[str, str] | None = None) -> Generation:
        """`skill` tried on `text` (`trial_prompt`), answered apart from the chat (which stays as it is, its cache too):
        iterate the generation for the answer."""
        request = self._trial_request(skill, text, values)
        settings, _ = with_seed(request.settings, self.seeds)
        engine = self._engine_now()
        stops = request.stop_strings + (self.models.defaults(self.model).stop_strings if self.models is not None else ())
        return engine.generate(engine.prepare(request.messages, settings), settings, stops)

    def _trial_request(self, skill: Skill, text: str, values: Mapping[str, str] | None) -> ModelRequest:
        return model_request([{"role": "user", "content": skill.expand(text, values)}], self.instructions, skill, self.settings)

    # -- saving and loading -------------------------------------------------------------------

    def load_messages(self, data: Any, source: str = "conversation") -> None:
        """Shows a conversation from a file: a messages list (one path), or this app's file with every version."""
        instructions, tree, path = read_conversation(data, source)
        if instructions is not None:
            self.instructions = instructions
        self._show(tree, path)
        self.record = None  # a loaded file is not the stored chat (the caller may `start_record` a new one)

    def open(self, record: ConversationRecord, tree: ConversationTree, history: list[ChatMessage], instructions: str,
             settings: GenerationSettings, model: str | None = None) -> None:
        """Shows a stored chat (from `chat.store.record.tree_of`); what happens next is written to `record`.
        `model`: the one it answers with (loaded at its next answer; a model the list no longer has: the current one)."""
        self._show(tree, history)
        self.instructions, self.settings, self.record = instructions, settings, record
        if self.models is not None:  # (a chat saved before models were chosen, or one whose model is gone: the default)
            self.model = (self.models.find(model) if model else None) or self.models.default
            loaded = self.models.loaded_engine(self.model)
            if loaded is not None:
                self._switch_engine(loaded)  # (otherwise it loads at the chat's next answer)

    def start_record(self, record: ConversationRecord) -> None:
        """Writes the chat as it is (a loaded file: every version) to a new `record`, and what happens next."""
        self.record = record
        record.model(self.model)
        for message in self.tree.ordered():
            parent_id = self.tree.parent[message["id"]]
            record.added(message, self.tree.messages.get(parent_id) if parent_id else None)
        self._record_shown()

    def _show(self, tree: ConversationTree, history: list[ChatMessage]) -> None:
        self.tree = tree
        self.history[:] = history  # in place: the stream of the answer stopped below draws from this list
        self._discard_answer()
        self.last_prompt = self.last_stats = None
        self.first_in_view = 0

    # -- internals ----------------------------------------------------------------------------

    def _append(self, message: ChatMessage) -> None:
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

    def _started_answer(self, tokens: bool) -> Reply:
        reply = self.answer_last(tokens)
        assert reply is not None  # `post` left an unanswered message (or raised)
        return reply

    def _answer_or_fail(self, start: Callable[[], Reply]) -> Reply:
        try:
            return start()
        except ChatError as error:
            self._append({"role": "assistant", "content": "", "error": str(error)})
            raise

    def _answer(self, skill: Skill | None, tokens: bool, settings: GenerationSettings | None = None, instructions: str | None = None,
                reproduces: str | None = None, then: tuple[NextPart, ...] = (), model: str | None = None) -> Reply:
        instructions = self.instructions if instructions is None else instructions
        engine = self._engine_now(model)
        sent = sent_messages(self.history)
        request = model_request(list(sent.values()), instructions, skill, settings or self.settings)
        if settings is not None:  # recorded as they were (the skill's settings among them): as they are
            request = ModelRequest(request.messages, settings, request.stop_strings)
        seeded, drawn = with_seed(request.settings, self.seeds)
        fitted = engine.prepare(request.messages, seeded)
        engine, generation = self._generate(engine, fitted, seeded, request.stop_strings, tokens, model)
        made = Part.made(engine, fitted, seeded, drawn)
        answer: ChatMessage = {"role": "assistant", "content": "",
                               "provenance": self._begin(engine, skill, instructions, made, reproduces=reproduces)}
        if fitted.message_notice:
            answer["notice"] = f"Note: {fitted.message_notice}."
        # One notice for left-out history, kept current: where the part the model sees now begins.
        self.first_in_view = list(sent)[fitted.dropped_messages]
        self._append(answer)
        if self.record is not None:
            self.record.settings(self.instructions, skill.name if skill else None, self.settings)
        return self._started(self._reply(generation, answer, made, then))

    def _begin(self, engine: Engine, skill: Skill | None, instructions: str, first: Part | None = None, **more: Any) -> Provenance:
        """An answer's provenance, with the skill as it is now and its values, and what the model's defaults set."""
        provenance = Provenance.begin(engine, skill.name if skill else None, instructions, first, **more)
        if skill is not None:
            provenance.skill_definition, provenance.skill_version = skill.to_data(), skill.version
            question = next((m for m in reversed(self.history) if m["role"] == "user"), None)
            provenance.values = dict(question.get("values") or {}) if question is not None else {}
        if self.models is not None:
            provenance.model_defaults = tuple(self.models.defaults(engine.name).words())
        return provenance

    def _recorded_skill(self, provenance: Provenance) -> Skill | None:
        """The skill an answer was made with, as it was then (a skill edited or deleted since: its recorded text)."""
        if provenance.skill_definition is not None:
            try:
                recorded = skill_from_data(provenance.skill_definition, f"the skill {provenance.skill!r} of the answer")
                return dataclasses.replace(recorded, version=provenance.skill_version)
            except SkillError:
                pass  # (recorded by a release whose skills this one can't read: as the skill is now)
        return self.skills.find(provenance.skill)

    def _next_part(self, settings: GenerationSettings, drawn: bool, skill: Skill | None, instructions: str,
                   tokens: bool, model: str | None = None) -> NextPart:
        """Starts, when called, the next part of an answer with `settings` (see `_continuation`)."""
        return lambda: self._continuation(settings, drawn, skill, instructions, tokens, model)

    def _continuation(self, settings: GenerationSettings, drawn: bool, skill: Skill | None, instructions: str,
                      tokens: bool, model: str | None = None) -> tuple[Generation, Part]:
        """A generation for more of the last shown answer (by `model`; default: the chat's), and its provenance part."""
        engine = self._engine_now(model)
        fitted = engine.prepare(self.model_messages(instructions), settings, continues=True)
        engine, generation = self._generate(engine, fitted, settings, answer_stop_strings(skill), tokens, model)
        return generation, Part.made(engine, fitted, settings, drawn)

    def _reply(self, generation: Generation, answer: ChatMessage, made: Part, then: tuple[NextPart, ...] = ()) -> Reply:
        return Reply(generation, answer, made, self.record, self.token_logs, self._ended, then)

    def _started(self, reply: Reply) -> Reply:
        self.last_prompt = reply.fitted
        self._current = reply
        return reply

    def _ended(self, reply: Reply) -> None:
        """`on_end` of each reply: its figures become the status line's, unless a newer one replaced it."""
        if self._current is not reply:  # an older answer, replaced since: its stats are stale
            return
        self._current = None
        if "error" not in reply.answer:
            self.last_stats = reply.stats
