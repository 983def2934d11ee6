"""`python -m chat` (or `python -m chat talk`): a conversation in the terminal.

It drives the same `ChatSession` and engine as the web app, so skills, instructions, context
fitting and stop strings behave alike, and a conversation saved here loads there (and back).

* Interactive (stdin is a terminal): a prompt with line editing, answers streamed as they come,
  slash commands (`/help`); Ctrl+C stops the answer, not the program; Ctrl+D or /quit leaves.
* Piped (stdin is not a terminal): each input line is one message and each answer is printed on
  stdout, one after the other, as the seed's `generate.py` did: usable in scripts and pipes.
  Commands work there too; their confirmations go to stderr, so stdout holds only answers.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from typing import Callable, Iterable, TextIO

from .args import (build_instructions, build_models, build_skills, load_default, open_store_from_args, owner_from_args, starting_with,
                   settings_from_args)
from ..files import load_conversation, save_conversation
from ..errors import ChatError, GenerationError, SkillError
from ..session import ChatSession, Reply
from ..skill_library import SkillLibrary
from ..skills import SkillBook
from ..files import conversation_document
from ..tree import ChatMessage
from ..answer_tokens import MODEL, DistributionName
from ..models import ModelList
from ..compare import LETTERS, Contender
from ..comparing import STOP_WAIT_S
from ..skills import Skill
from .compare_lines import USAGE as COMPARE_USAGE, contenders, letter_index, print_answers, verdict
from .model_lines import find_model, model_line
from .names import matching
from .progress import terminal_bar
from .token_lines import USAGE, chosen_distribution, token_lines
from ..store.record import ChatRecord, settings_of, tree_of
from ..store.store import Store

HELP = """Commands:
  /skill NAME    use a skill for the next messages (a number or part of the name will do)
  /skills        list the skills and their commands
  /summarize TXT a skill's command (/skills lists them): that skill for this one message
  /models        the models: weights, size, memory estimate, which are loaded (* marks this chat's)
  /model NAME    answer with another model from the next message on (a number or part of the name will do;
                 /model alone says which one answers)
  /unload NAME   free a model's memory (a chat that uses it loads it again at its next answer)
  /retry         a new answer to your last message (the old one stays: a version)
  /continue      more of the last answer, where it stopped (its token limit, or Ctrl+C)
  /reproduce     the last answer again, from its recorded settings and seed (same model: same text)
  /versions      the messages that have other versions (Retry, /reproduce, the web page's edits)
  /prev [N]      show the previous version of message N (default: the last with versions), and what followed it
  /next [N]      … the next version
  /compare C C … answer the next message with each contender at once, printed one after another, labelled:
                 /compare temperature=0 temperature=1.2 (model=NAME, skill=summarize@2, instructions="…"; quote
                 several changes: "temperature=0 top_k=5"; one alone: against the chat as it is)
  /pick A        go on with answer A of the comparison (a vote for it, unless you voted)
  /vote A        vote on the comparison: A (B, …) is better, tie, or bad (both bad); once
  /tokens        the last answer's tokens: each one's probability and the likeliest others there
                 (/tokens on: record them for the next answers, off: stop; model, penalized or sampled:
                 which probabilities: the model's own, after the repetition penalty, or drawn from)
  /undo          hide the last exchange (your message comes back to edit; kept as a version)
  /clear         empty this conversation (what it held is kept as versions)
  /new           start a new conversation (the last one stays in /chats)
  /chats [TEXT]  your saved conversations, newest first (TEXT: only those mentioning it)
  /open ID       continue a saved conversation (an ID from /chats; its first letters will do)
  /system TEXT   set the system instructions (/system alone shows them, /system none removes them)
  /save FILE     save the conversation as JSON, every version (the web app loads it too)
  /load FILE     load a conversation saved here or in the web app
  /help          this list
  /quit          leave (Ctrl+D does too)
Ctrl+C stops an answer."""
STOPPED = "[stopped]"
COMMAND_WORD = re.compile(r"/[A-Za-z][A-Za-z0-9_-]*")  # "/sytem hi" is a typo to point out, "/usr/bin …" a message
LOADED_SHOWN = 4  # after /load, the last messages shown so the user sees where they are
LAST = "last"  # --resume without an ID: the newest chat
CHATS_SHOWN = 20  # /chats lists this many


def add_talk_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("terminal chat")
    group.add_argument("--load", metavar="FILE.json", help="continue a conversation from a JSON file (from here or the web app)")
    group.add_argument("--resume", nargs="?", const=LAST, metavar="ID",
                       help="continue a saved conversation: the newest, or the one with this ID (/chats lists them)")
    group.add_argument("--skill", help="skill to start with (default: the first in the skills file)")
    group.add_argument("--stats", action="store_true", help="after each answer, show tokens, speed and why it stopped (stderr)")


def run_talk(args: argparse.Namespace) -> int:
    store = open_store_from_args(args)  # first: a database that can't be opened is one line, before the model loads
    models = build_models(args, say=_say_on_stderr, keeper=store)  # (the store keeps each model's defaults)
    engine = load_default(models, say=_say_on_stderr)
    instructions, settings = starting_with(models, args, build_instructions(args, engine), settings_from_args(args))
    owner = owner_from_args(args)
    library = SkillLibrary(build_skills(args), store.skills if store is not None else None)  # (the user's own skills too)
    session = ChatSession(engine, lambda: library.book(owner), instructions, settings, models=models)
    talk = Talk(session, interactive=sys.stdin.isatty(), show_stats=args.stats, store=store, owner=owner, library=library)
    if args.skill:
        talk.skill = find_skill(session.skills, args.skill)
    if args.resume:
        talk.open_chat("" if args.resume == LAST else args.resume)
        if session.model != models.default:  # the chat has a model of its own: the one loaded to start with can go
            models.unload(models.default)
    if args.load:
        talk.load(args.load)
        if args.instructions is not None:  # the flag wins over the file's instructions
            session.instructions = build_instructions(args, engine)
    if talk.interactive:
        return talk.run_interactive()
    return talk.run_lines(sys.stdin)


def _say_on_stderr(line: str) -> None:
    """Loading messages: stderr, so that a piped run's stdout holds only answers."""
    print(line, file=sys.stderr, flush=True)


def find_skill(skills: SkillBook, query: str) -> str:
    """The skill a user means: its name, its number in /skills, or a unique part of the name
    ("german" → "🔄 Translate to German"). Raises `SkillError` naming the candidates if unclear."""
    query = query.strip()
    names = skills.names()
    if query in skills:
        return query
    if query.isdigit() and 1 <= int(query) <= len(names):
        return names[int(query) - 1]
    matches = matching(names, query)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise SkillError(f"{query!r} matches several skills: {', '.join(matches)}; type more of the name")
    raise SkillError(f"no skill called {query!r}; /skills lists them")


class Talk:
    """One terminal conversation: reads lines, runs commands, streams answers to `out`."""

    def __init__(self, session: ChatSession, interactive: bool, show_stats: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None, store: Store | None = None, owner: str = "",
                 library: SkillLibrary | None = None):
        self.session, self.interactive, self.show_stats = session, interactive, show_stats
        self.store = store  # where conversations are kept (None: --db none)
        self.owner = owner  # whose conversations these are, as the store knows them
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.skill = session.skills.default.name
        self.failed = False  # a piped run that met an error exits with 1
        self.out_of_view = 0  # the oldest messages the model no longer sees, as last told
        self.token_distribution: DistributionName = MODEL  # which probabilities /tokens shows
        self.record_tokens = False  # answers record their tokens' probabilities (/tokens on)
        self.prefill = ""  # text put back on the input line (after /undo)
        self.can_prefill = False  # the line reader can put text on the input line
        self.commands: dict[str, Callable[[str], bool | None]] = {
            "/skill": self.use_skill, "/skills": self.list_skills, "/retry": self.retry, "/undo": self.undo,
            "/model": self.use_model, "/models": self.list_models, "/unload": self.unload_model,
            "/continue": self.continue_answer, "/reproduce": self.reproduce, "/versions": self.versions,
            "/tokens": self.tokens,
            "/prev": lambda number: self.switch(number, -1), "/next": lambda number: self.switch(number, +1),
            "/clear": self.clear, "/system": self.system, "/save": self.save, "/load": self.load,
            "/new": self.new_chat, "/chats": self.list_chats, "/open": self.open_chat,
            "/help": self.help, "/quit": self.quit, "/exit": self.quit,
            "/compare": self.compare, "/pick": self.pick, "/vote": self.vote,
        }
        self.library = library  # the skills file's and the user's own, with their versions (/compare skill=NAME@2)
        self.comparing: list[Contender] = []  # /compare: the contenders of the next message

    # -- the two ways in ------------------------------------------------------------------------

    def run_interactive(self) -> int:
        """Prompt, read, answer, until /quit or Ctrl+D. Ctrl+C at the prompt clears the line."""
        # Ctrl+C must reach us even when we were started with SIGINT ignored (as a shell starts
        # background jobs, and as some CI runners start everything): Python then never raises it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        read, self.can_prefill = _line_reader()
        self.show(f"Chatting with {self.session.model}. Type a message; /help lists the commands. "
                  "Ctrl+C stops an answer, Ctrl+D or /quit leaves.")
        while True:
            try:
                line = read(f"{self.skill}> ", self.prefill)
            except EOFError:
                self.show("")
                return 0
            except KeyboardInterrupt:
                self.show("\n(Ctrl+D or /quit leaves)")
                continue
            self.prefill = ""
            try:
                if not self.handle(line):
                    return 0
            except KeyboardInterrupt:  # between Enter and the first token: still only this answer stops
                self.session.stop()
                self.show(STOPPED)

    def run_lines(self, lines: Iterable[str]) -> int:
        """Each line one message (or command), each answer printed: the seed's generate.py loop."""
        for line in lines:
            if not self.handle(line.rstrip("\r\n")):
                break
        return 1 if self.failed else 0

    def handle(self, line: str) -> bool:
        """Runs one line; False when the user asked to leave. Errors are shown, never raised."""
        word, _, rest = line.rstrip().partition(" ")
        try:
            if word in self.commands:
                return self.commands[word](rest.strip()) is not False
            is_skill_command = COMMAND_WORD.fullmatch(word) and word[1:].lower() in {skill.command for skill in self.session.skills}
            if (line.strip() and not COMMAND_WORD.fullmatch(word) or is_skill_command) and self.comparing:
                self.keep_in_store()
                self.compared(line)  # (a skill's /command too: that skill for this message, for every contender)
                return True
            if is_skill_command:
                self.keep_in_store()  # a skill's /command: that skill, for this message (the session reads it)
                self.stream(self.session.send(line, self.skill, tokens=self.record_tokens))
                return True
            if COMMAND_WORD.fullmatch(word):
                raise ChatError(f"unknown command {word}: /help lists them (start the line with a space to send it as a message)")
            if line.strip():
                self.keep_in_store()
                self.stream(self.session.send(line, self.skill, tokens=self.record_tokens))
        except ChatError as error:
            self.failed = True
            again = " (your message is kept: /retry tries again)" if isinstance(error, GenerationError) else ""
            print(f"error: {error}{again}", file=self.err, flush=True)
        return True

    # -- answers --------------------------------------------------------------------------------

    def stream(self, reply: Reply) -> None:
        """Shows the answer as it comes. Ctrl+C stops the model and keeps what was said so far."""
        if reply.fitted.message_notice:
            self.note(f"Note: {reply.fitted.message_notice}.")
        if self.session.out_of_view != self.out_of_view:  # told once per trim, not at every turn
            self.out_of_view = self.session.out_of_view
            if self.out_of_view:
                self.note(f"Note: the model no longer sees the {self.out_of_view} oldest messages: they no longer fit "
                          f"its {self.session.engine.context_window:,}-token context.")
        chunks, wrote = reply.stream(), False
        try:
            for delta in chunks:
                self.out.write(delta)
                self.out.flush()
                wrote = True
        except KeyboardInterrupt:
            reply.cancel()
            chunks.close()  # ends the worker now, not when the generator is collected
            self.out.write((" " if wrote else "") + STOPPED)
            if not self.interactive:
                raise  # in a pipe, Ctrl+C means stop the whole run
        finally:
            self.out.write("\n\n" if self.interactive else "\n")  # (a blank line before the next prompt)
            self.out.flush()
        if self.show_stats and reply.stats.stop_reason:
            print(f"[{reply.stats.summary()}]", file=self.err, flush=True)

    def compared(self, line: str) -> None:
        """The message answered by each /compare contender at once, the answers printed one after another."""
        run = self.session.comparisons.compare(line, self.comparing, self.skill, blind=False, tokens=self.record_tokens)
        self.comparing = []  # (refused, the contenders stay for the next message)
        try:
            print_answers(run, self.out)
        except KeyboardInterrupt:
            run.cancel()
            run.wait(STOP_WAIT_S)  # (each column's model ends its step: /vote may follow at once)
            self.out.write(STOPPED + "\n")
            if not self.interactive:
                raise
        self.note("/pick " + " or ".join(LETTERS[: len(run.replies)]) + " goes on with that answer; /vote tie or /vote bad")

    # -- commands (each takes the text after the command word) -----------------------------------

    def compare(self, text: str) -> None:
        if not text:
            self.show(COMPARE_USAGE)
            return
        self.comparing = contenders(text, self._find_skill)
        self.note(f"The next message is answered by {len(self.comparing)} contenders at once: " + "; ".join(
            f"{LETTERS[n]}: {contender.describe()}" for n, contender in enumerate(self.comparing)))

    def _find_skill(self, name: str, version: int | None) -> Skill:
        if self.library is not None:
            return self.library.find(self.owner, name, version)
        skill = self.session.skills.find(find_skill(self.session.skills, name))
        if skill is None or (version is not None and version != skill.version):
            raise SkillError(f"{name}: no version {version}")
        return skill

    def pick(self, word: str) -> None:
        shown = self.session.comparisons.shown
        if shown is None:
            raise ChatError("no comparison to go on from: /compare first")
        column = self.session.comparisons.go_on_with(letter_index(word, shown[1]))
        self.note(f"Going on with {word.strip().upper()}: {column.label}")

    def vote(self, word: str) -> None:
        shown = self.session.comparisons.shown
        if shown is None:
            raise ChatError("no comparison to vote on: /compare first")
        comparison = self.session.comparisons.judge(*verdict(word, shown[1]))
        self.note(f"Vote: {comparison.verdict()} (locked)")

    def use_skill(self, name: str) -> None:
        if not name:
            self.show(f"Skill: {self.skill} (/skills lists them)")
            return
        self.skill = find_skill(self.session.skills, name)
        self.note(f"Skill: {self.skill}")

    def list_skills(self, _: str) -> None:
        """Each skill, its /command (a line that starts with it uses the skill for that message) and what it does."""
        for number, skill in enumerate(self.session.skills, start=1):
            mark = "*" if skill.name == self.skill else " "
            about = f" - {skill.description}" if getattr(skill, "description", "") else ""
            mine = f" (yours, v{skill.version})" if skill.version is not None else ""
            self.show(f"{mark} {number}. /{skill.command}  {skill.name}{mine}{about}")

    def retry(self, _: str) -> None:
        self.stream(self.session.retry(tokens=self.record_tokens))

    # -- models -------------------------------------------------------------------------------------

    def use_model(self, name: str) -> None:
        """The next answers come from `name`, loaded first (with a bar) if it isn't. A model that can't load
        (it won't fit, its folder is broken) raises a `ChatError`: one line, and the chat keeps its model."""
        if not name:
            self.show(f"Model: {self.session.model} (/models lists them)")
            return
        wanted = find_model(self._models(), name)
        with terminal_bar(wanted, self.err) as bar:
            self.session.use_model(wanted, bar)
        self.note(f"Model: {self.session.model}")
        skill = self._models().defaults(self.session.model).skill
        if skill is not None and skill in self.session.skills and skill != self.skill:  # the model's default skill, where the user has it
            self.skill = skill
            self.note(f"Skill: {skill} (the model's default)")

    def list_models(self, _: str) -> None:
        for number, info in enumerate(self._models().listing(), start=1):
            self.show(model_line(number, info, self.session.model))

    def unload_model(self, name: str) -> None:
        if not name:
            raise ChatError("/unload needs a model, e.g. /unload 2 (/models lists them)")
        models = self._models()
        wanted = find_model(models, name)
        if models.loaded_engine(wanted) is None:
            self.note(f"{wanted} is not loaded.")
            return
        models.unload(wanted)
        again = " (this chat loads it again at its next answer)" if wanted == self.session.model else ""
        self.note(f"Unloaded {wanted}{again}")

    def _models(self) -> ModelList:
        if self.session.models is None:
            raise ChatError(f"this chat has one model: {self.session.model}")
        return self.session.models

    # -- saved conversations ------------------------------------------------------------------------

    def keep_in_store(self) -> None:
        """Before the first message of a conversation: it becomes a chat in the store."""
        if self.store is not None and self.session.record is None:
            self.session.start_record(ChatRecord.new(self.store, self.owner, self.session.instructions, self.session.settings))

    def new_chat(self, _: str) -> None:
        self.session.new_conversation()  # the next message starts one in the store
        self.note("New conversation.")

    def list_chats(self, search: str) -> None:
        store = self._store()
        chats = store.chats(self.owner, search=search, limit=CHATS_SHOWN)
        current = self.session.record.chat_id if self.session.record else None
        if not chats:
            self.show("No saved conversations" + (f" mention {search!r}." if search else " yet."))
        for chat in chats:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated_at))
            self.show(f"{'*' if chat.id == current else ' '} {chat.id}  {when}  {chat.title or '(empty)'}")

    def open_chat(self, wanted: str) -> None:
        """Continues a saved chat: the newest (no ID), or the one whose ID starts with `wanted`."""
        store = self._store()
        chats = store.chats(self.owner, limit=10_000)
        matches = [c for c in chats if c.id.startswith(wanted)] if wanted else chats[:1]
        if len(matches) != 1:
            raise ChatError(f"{'several' if matches else 'no'} saved conversations match {wanted!r}: /chats lists them"
                            if wanted else "no saved conversations yet")
        chat = store.open_chat(self.owner, matches[0].id)
        before = self.session.model
        self.session.open(ChatRecord(store, self.owner, chat.id), *tree_of(chat), chat.instructions,
                          settings_of(chat, self.session.settings), chat.model)
        if chat.skill in self.session.skills.names():
            self.skill = chat.skill
        self.note(f"Continuing {chat.title or 'an empty conversation'!r} ({len(chat.messages)} messages)")
        self._tell_model_of(chat.model, before)
        for message in self.session.history[-LOADED_SHOWN:] if self.interactive else ():
            mark = " [interrupted]" if message.get("interrupted") else ""
            self.show(f"{message['role']}: {message.get('typed', message['content'])}{mark}")

    def _tell_model_of(self, saved: str | None, before: str) -> None:
        """After /open: the model that answers now, where it is not the one that answered before, or where the
        chat's own model is no longer in the list."""
        if self.session.model != before:
            self.note(f"Model: {self.session.model} (this conversation's)")
        elif saved and self.session.models is not None and self.session.models.find(saved) is None:
            self.note(f"Note: this conversation's model {saved} is not in the list; {self.session.model} answers.")

    def _store(self) -> Store:
        if self.store is None:
            raise ChatError("conversations are not saved (--db none)")
        return self.store

    def undo(self, _: str) -> None:
        typed = self.session.undo()
        if not typed:
            self.note("Nothing to undo.")
        elif self.can_prefill:
            self.prefill = typed  # back on the input line, to edit and send again
        else:
            self.note(f"Removed: {typed}")

    def continue_answer(self, _: str) -> None:
        self.stream(self.session.continue_answer(tokens=self.record_tokens))

    def reproduce(self, _: str) -> None:
        self.stream(self.session.reproduce(tokens=self.record_tokens))

    def tokens(self, word: str) -> None:
        word = word.strip().casefold()
        if word in ("on", "off"):
            self.record_tokens = word == "on"
            self.note("Answers now record their tokens (a few percent slower)." if word == "on" else "Tokens are no longer recorded.")
            return
        chosen = chosen_distribution(word) if word else self.token_distribution
        if chosen is None:
            raise ChatError(f"unknown /tokens option {word!r}: {USAGE}")
        self.token_distribution = chosen
        answers = [m for m in self.session.history if m["role"] == "assistant"]
        log = self.session.token_logs.of(answers[-1]) if answers else None
        if log is None:
            self.record_tokens = True
            self.note("The last answer's tokens were not recorded. The next answers record them (a few percent slower): "
                      "/tokens again after one; /tokens off stops.")
            return
        for line in token_lines(log, self.token_distribution):
            self.show(line)

    def versions(self, _: str) -> None:
        found = self.session.tree.versions(self.session.history)
        if not found:
            self.show("No message has other versions yet (/retry makes one).")
        for index, k, n in found:
            message = self.session.history[index]
            self.show(f"{index + 1}. {_speaker(message)}: version {k} of {n}: {_start(message)}")

    def switch(self, number: str, step: int) -> None:
        found = [index for index, _, _ in self.session.tree.versions(self.session.history)]
        if not found:
            raise ChatError("no message has other versions yet (/retry makes one)")
        if number and not (number.isdigit() and int(number) - 1 in found):
            raise ChatError(f"message {number} has no other versions: /versions lists those that do")
        index = int(number) - 1 if number else found[-1]
        self.session.switch(index, step)
        k, n = self.session.tree.version(self.session.history[index]["id"])
        self.note(f"Message {index + 1} ({_speaker(self.session.history[index])}), version {k} of {n}:")
        for message in self.session.history[index:]:
            self.show(f"{_speaker(message)}: {message.get('typed', message['content'])}")

    def clear(self, _: str) -> None:
        self.session.clear()
        self.note("New conversation.")

    def system(self, text: str) -> None:
        if not text:
            self.show(self.session.instructions or "(no system instructions)")
            return
        self.session.instructions = "" if text.casefold() == "none" else text
        self.note("System instructions removed." if text.casefold() == "none" else "System instructions set.")

    def save(self, path: str) -> None:
        if not path:
            raise ChatError("/save needs a file name, e.g. /save chat.json")
        try:
            saved = save_conversation(path, conversation_document(self.session))
        except OSError as error:
            raise ChatError(f"can't save to {path}: {error.strerror or error}") from None
        self.note(f"Saved {len(self.session.history)} messages to {saved}")

    def load(self, path: str) -> None:
        if not path:
            raise ChatError("/load needs a file name, e.g. /load chat.json")
        self.session.load_messages(load_conversation(path), path)
        self.keep_in_store()  # a loaded file becomes a new saved conversation
        history = self.session.history
        self.note(f"Loaded {len(history)} messages from {path}")
        for message in history[-LOADED_SHOWN:] if self.interactive else ():
            self.show(f"{message['role']}: {message.get('typed', message['content'])}")

    def help(self, _: str) -> None:
        self.show(HELP)

    def quit(self, _: str) -> bool:
        return False

    # -- output -----------------------------------------------------------------------------------

    def show(self, text: str) -> None:
        """What the user asked to see: always on stdout."""
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """Confirmations and notices: stdout in a terminal, stderr in a pipe (stdout = answers)."""
        print(text, file=self.out if self.interactive else self.err, flush=True)


def _speaker(message: ChatMessage) -> str:
    return "you" if message["role"] == "user" else "assistant"


def _start(message: ChatMessage, chars: int = 60) -> str:
    line = " ".join(message.get("typed", message["content"]).split())
    return line if len(line) <= chars else line[: chars - 1] + "…"


def _line_reader() -> tuple[Callable[[str, str], str], bool]:
    """(read, can_prefill): input() with line editing and history, and `prefill` already typed
    on the line, where readline exists; else plain input(). Imported here: importing readline
    changes how input() behaves, which only an interactive chat wants."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline
        return (lambda prompt, prefill: input(prompt)), False

    def read(prompt: str, prefill: str) -> str:
        readline.set_startup_hook((lambda: readline.insert_text(prefill)) if prefill else None)
        try:
            return input(prompt)
        finally:
            readline.set_startup_hook(None)

    return read, True
