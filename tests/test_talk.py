"""The terminal chat, driven as a user drives it: lines piped into `python -m chat`, and a real
pseudo-terminal for the interactive prompt, the commands and Ctrl+C."""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from chat.cli.talk import find_skill
from chat.files import load_conversation, plain_messages
from chat.instructions import CHAT_INSTRUCTIONS
from chat.skills_file import load_skills
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
MAX_NEW_TOKENS = 12
SEED = 7  # skills may set their own temperature (Translate: 0.2): a seed makes those answers repeatable too
GREEDY_FLAGS = ["--temperature", "0", "--max-new-tokens", str(MAX_NEW_TOKENS), "--seed", str(SEED)]
WAIT_S = 90  # model loading in a fresh process can be slow on a busy CI machine


def chat_env(tmp_path) -> dict[str, str]:
    # One thread: a tiny model gains nothing from more, and the in-test expectation runs alike.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT),
            "XDG_DATA_HOME": str(tmp_path / "data")}  # (the default conversation database lives there)


def piped(tmp_path, model_dir, lines: str, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "chat", "--model", str(model_dir), *GREEDY_FLAGS, *flags]
    # bytes, not text: an answer may hold a "\r" that text mode would turn into "\n"
    return subprocess.run(command, input=lines.encode(), capture_output=True, cwd=tmp_path, env=chat_env(tmp_path), timeout=WAIT_S * 2)


@pytest.fixture(scope="module")
def expected(tiny_engine):
    """What the same model answers greedily in-process, for comparing with what the terminal shows."""
    import torch

    def answers(*turns: str, history=(), instructions=CHAT_INSTRUCTIONS, skills=None) -> list[str]:
        settings = greedy(MAX_NEW_TOKENS, seed=SEED)
        session = seeded_session(tiny_engine, load_skills(), instructions, settings)
        session.load_messages([{"role": "system", "content": instructions}, *history] if instructions else list(history))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return ["".join(session.send(turn, skill)) for turn, skill in zip(turns, skills or [None] * len(turns))]
        finally:
            torch.set_num_threads(threads)

    return answers


# -- piped: one line, one message ------------------------------------------------------------------


def test_each_piped_line_is_a_message_and_mistakes_do_not_stop_the_rest(tmp_path, tiny_chat_dir, expected):
    lines = "Hello\n\n/skill nosuch\n/sytem hi\n/load missing.json\nWhat is the capital of France?\n"
    run = piped(tmp_path, tiny_chat_dir, lines)
    first, second = expected("Hello", "What is the capital of France?")
    assert run.stdout.decode() == f"{first}\n{second}\n"  # only the answers; the blank line was no message
    stderr = run.stderr.decode()
    assert "Model: " in stderr
    assert "error: no skill called 'nosuch'; /skills lists them" in stderr
    assert "error: unknown command /sytem: /help lists them" in stderr
    assert "error: missing.json: can't read the file" in stderr
    assert run.returncode == 1  # a script learns that something went wrong


def test_a_skills_command_picks_its_skill_for_that_message_alone(tmp_path, tiny_chat_dir, tiny_engine, expected):
    lines = "/translate-to-german Guten Tag\nHello\n/nosuch hi\n/save chat.json\n"
    run = piped(tmp_path, tiny_chat_dir, lines)
    translated, hello = expected("Guten Tag", "Hello", skills=["🔄 Translate to German", None])
    assert run.stdout.decode() == f"{translated}\n{hello}\n"  # the command's skill, then the chat's own again
    assert "error: unknown command /nosuch: /help lists them" in run.stderr.decode()
    saved = seeded_session(tiny_engine, load_skills())
    saved.load_messages(load_conversation(tmp_path / "chat.json"), "chat.json")
    asked = [(m.get("skill"), m.get("typed")) for m in plain_messages(saved) if m["role"] == "user"]
    assert asked == [("🔄 Translate to German", "Guten Tag"), ("💬 Chat", "Hello")]


def test_a_conversation_moves_between_the_web_app_and_the_terminal(tmp_path, tiny_chat_dir, tiny_engine, expected):
    history = [{"role": "user", "content": "Hello", "typed": "Hello", "skill": "💬 Chat"},
               {"role": "assistant", "content": "Hi! How can I help?"}]
    (tmp_path / "from_app.json").write_text(json.dumps([{"role": "system", "content": "Be kind."}, *history]), encoding="utf-8")
    lines = "Tell me more.\n/retry\n/skill german\nGuten Tag\n/save chat.json\n"
    run = piped(tmp_path, tiny_chat_dir, lines, "--load", "from_app.json")
    assert run.returncode == 0, run.stderr.decode()
    more, translated = expected("Tell me more.", "Guten Tag", history=history, instructions="Be kind.",
                                skills=[None, "🔄 Translate to German"])
    assert run.stdout.decode() == f"{more}\n{more}\n{translated}\n"  # /retry answers the same message again
    stderr = run.stderr.decode()
    assert "Loaded 2 messages from from_app.json" in stderr and "Saved 6 messages to chat.json" in stderr
    saved = seeded_session(tiny_engine, load_skills())
    saved.load_messages(load_conversation(tmp_path / "chat.json"), "chat.json")  # the web app's loader
    messages = plain_messages(saved)
    assert messages[:3] == [{"role": "system", "content": "Be kind."}, *history]
    assert messages[3]["typed"] == "Tell me more." and messages[4] == {"role": "assistant", "content": more}
    assert messages[5]["typed"] == "Guten Tag" and messages[5]["skill"] == "🔄 Translate to German"
    assert messages[6] == {"role": "assistant", "content": translated}
    assert len(saved.tree) == 7 and saved.tree.versions(saved.history) == [(3, 2, 2)]  # the retried answer is kept, a version away


def test_versions_continue_and_reproduce_in_a_pipe(tmp_path, tiny_chat_dir):
    lines = "Tell me a story\n/retry\n/versions\n/prev\n/next 4\n/continue\n/reproduce\n/versions\n"
    run = piped(tmp_path, tiny_chat_dir, lines, "--max-new-tokens", "4", "--temperature", "1")
    # The story, a retried one, the versions, the story shown again by /prev, more of it, then all of it
    # again from its record (each part with its own seed), as a third version.
    shape = (r"(?s)(?P<story>.+)\n.+\n2\. assistant: version 2 of 2: .*\nassistant: (?P=story)\n(?P<more>.+)\n"
             r"(?P=story)(?P=more)\n2\. assistant: version 3 of 3: .*\n")
    assert re.fullmatch(shape, run.stdout.decode()), run.stdout.decode()
    stderr = run.stderr.decode()
    assert "Message 2 (assistant), version 1 of 2:" in stderr and "error: message 4 has no other versions" in stderr


def test_compare_in_a_pipe_prints_each_answer_labelled_then_goes_on_from_the_one_picked(tmp_path, tiny_chat_dir):
    lines = "/compare temperature=0 temperature=1.2\nTell me a story\n/vote tie\n/vote A\n/pick B\nAnd then?\n/versions\n"
    run = piped(tmp_path, tiny_chat_dir, lines, "--max-new-tokens", "4")
    out, err = run.stdout.decode(), run.stderr.decode()
    # Each answer under its letter and label, one after the other, then the answer to the next message.
    shape = r"(?s)\[A · [^\n]+ · changes: temperature 0\]\n(?P<a>.+)\n\n\[B · [^\n]+ · temperature 1\.2 · [^\n]+ · changes: temperature 1\.2\]\n(?P<b>.+)\n\n.+\n.*"
    found = re.fullmatch(shape, out)
    assert found, out
    assert "answered by 2 contenders at once: A: temperature 0; B: temperature 1.2" in err
    assert "Vote: tie (locked)" in err and "judged already (tie)" in err  # a vote once, then locked
    assert "Going on with B" in err and "2. assistant: version 2 of 2" in out  # B's answer shown, A's a version beside it


@pytest.mark.parametrize(
    "query, name",
    [("german", "🔄 Translate to German"), ("2", "🔄 Translate to German"), ("chat", "💬 Chat"),
     ("💬 Chat", "💬 Chat"), ("Explain code", "🧑‍💻 Explain code"), ("bullet", "• Bullet points")],
)
def test_a_skill_is_found_by_a_part_of_its_name_or_its_number(query, name):
    assert find_skill(load_skills(), query) == name


def test_an_ambiguous_skill_name_asks_for_more():
    with pytest.raises(Exception, match="matches several skills: .*Translate to German, .*Translate to English"):
        find_skill(load_skills(), "translate")


# -- interactive: a real terminal ---------------------------------------------------------------------


class Terminal:
    """`python -m chat` on a pseudo-terminal that is its controlling terminal, as in a shell:
    what it prints is what a user would see, and Ctrl+C is a real SIGINT from the tty."""

    def __init__(self, tmp_path: Path, *args: str, sigint_ignored: bool = False):
        master, slave = pty.openpty()

        def become_the_terminals_program():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # (after setsid: the pty becomes ours)
            if sigint_ignored:  # as a shell starts a background job, and some CI runners everything
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat", *args], stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
            env={**chat_env(tmp_path), "TERM": "dumb"}, start_new_session=True, preexec_fn=become_the_terminals_program,
        )
        os.close(slave)
        self.master, self.screen, self.cursor = master, "", 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two reads

    def waiting_for_a_key(self) -> bool:
        """The program is blocked reading the terminal (readline's select), as Linux tells (/proc: its wait channel)."""
        wait_channel = Path(f"/proc/{self.process.pid}/wchan").read_text()
        return "select" in wait_channel or "poll" in wait_channel

    def expect(self, pattern: str, timeout: float = WAIT_S) -> str:
        """Waits until `pattern` (a regex) shows after what was matched before; returns the text up to it."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.screen, self.cursor)
            if match:
                seen, self.cursor = self.screen[self.cursor : match.end()], match.end()
                return seen
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError(f"never saw {pattern!r}; the screen ends with:\n{self.screen[-2000:]}")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the program ended and closed the terminal
            return False
        self.screen += self._decoder.decode(data).replace("\r\n", "\n")
        return bool(data)

    def close(self) -> int:
        try:
            return self.process.wait(timeout=WAIT_S)
        finally:
            os.close(self.master)


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def start(*args: str, **options) -> Terminal:
        opened.append(Terminal(tmp_path, *args, **options))
        return opened[-1]

    yield start
    for term in opened:
        if term.process.poll() is None:
            term.process.kill()
            term.close()


PROMPT = "💬 Chat> "


def test_an_interactive_session_streams_answers_and_runs_every_command(tmp_path, terminal, tiny_chat_dir, expected):
    term = terminal("--model", str(tiny_chat_dir), *GREEDY_FLAGS)
    term.expect("/help lists the commands")
    term.expect(re.escape(PROMPT))
    term.type("/help\n")
    term.expect(r"/retry +a new answer.*\n(.*\n)*.*/quit +leave")
    term.expect(re.escape(PROMPT))
    term.type("Hello\n")
    [hello] = expected("Hello")
    assert hello.strip() in term.expect(re.escape(PROMPT))
    term.type("/undo\n")
    term.expect(re.escape(PROMPT) + "Hello")  # the removed message is back on the line, to edit
    term.type("\n")  # send it again as it is: the same greedy answer
    assert hello.strip() in term.expect(re.escape(PROMPT))
    term.type("/skills\n")
    term.expect(r"\* 1\. /chat  💬 Chat - .*\n  2\. /translate-to-german  🔄 Translate to German")
    term.type("/skill 2\n")
    term.expect("Skill: 🔄 Translate to German\n🔄 Translate to German> ")
    term.type("/system Be brief.\n/system\n")
    term.expect("System instructions set.\n.*\nBe brief.\n")
    term.type("/save chat.json\n")
    term.expect("Saved 2 messages to chat.json")
    term.type("/clear\n/load chat.json\n")
    term.expect("New conversation.\n(.*\n)*Loaded 2 messages from chat.json\nuser: Hello\nassistant: ")
    term.type("/quit\n")
    assert term.close() == 0
    assert load_conversation(tmp_path / "chat.json")["instructions"] == "Be brief."


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["from a shell", "started with SIGINT ignored"])
def test_ctrl_c_stops_the_answer_not_the_program(tmp_path, terminal, sigint_ignored):
    # A tiny model with a long context and no chance to stop early: the answer runs for seconds.
    model = save_tiny_model(tmp_path / "long", context=16384)
    term = terminal("--model", str(model), "--temperature", "0", "--max-new-tokens", "8000", "--stats", sigint_ignored=sigint_ignored)
    term.expect(re.escape(PROMPT))
    term.type("Hello\n")
    term.expect(r"Hello\n(.|\n){40}")  # the answer is well under way (not in its first microseconds)
    term.type("\x03")  # Ctrl+C, through the terminal: SIGINT
    term.expect(r"\[stopped\]\n")
    term.expect(r"stop: cancelled\]")  # the model stopped too, not only the display
    term.expect(re.escape(PROMPT))
    # A person presses a key long after the prompt shows; a SIGINT in the microseconds before readline
    # waits for input is only seen at the next key (a CPython limitation): so first, until it waits.
    assert wait_for(term.waiting_for_a_key, WAIT_S), "the prompt never waited for input"
    term.type("\x03")  # at the prompt, Ctrl+C only clears the line
    term.expect(r"\(Ctrl\+D or /quit leaves\)")
    # Then the prompt comes back, and only then does a person press Ctrl+D: pressed sooner, while the
    # chat is between two reads, the terminal's end-of-file is lost (on a busy machine the test hung).
    term.expect(re.escape(PROMPT))
    term.type("\x04")  # Ctrl+D at an empty prompt leaves
    assert term.close() == 0


def test_the_terminal_says_once_per_trim_what_the_model_no_longer_sees(tmp_path):
    """A long chat in a small context: one note at each trim, not one at every turn."""
    import io

    from chat.cli.talk import Talk
    from tests.helpers.engines import make_engine

    engine = make_engine(save_tiny_model(tmp_path / "small", context=300))
    session = seeded_session(engine, load_skills(), "Be brief.", greedy(MAX_NEW_TOKENS))
    talk = Talk(session, interactive=False, out=io.StringIO(), err=io.StringIO())
    turns = 16
    for turn in range(turns):
        talk.handle(f"message {turn} with a few words")
    notes = re.findall(r"no longer sees the (\d+) oldest messages: they no longer fit its 300-token context", talk.err.getvalue())
    counts = [int(n) for n in notes]
    assert counts and counts == sorted(set(counts))  # each trim told once, the count growing
    assert len(counts) <= turns // 3  # not at every turn: a trim makes room for several
    assert session.out_of_view == counts[-1]


def test_tokens_in_a_pipe_show_each_token_of_the_last_answer_with_its_alternatives(tmp_path, tiny_chat_dir, tiny_engine):
    lines = "Hello\n/tokens\nHello again\n/tokens\n/tokens sampled\n/tokens off\n/tokens bogus\n"
    run = piped(tmp_path, tiny_chat_dir, lines, "--repetition-penalty", "1")
    out, err = run.stdout.decode(), run.stderr.decode()
    assert "The last answer's tokens were not recorded. The next answers record them" in err  # the first /tokens
    header = re.search(r"(\d+) tokens; probabilities: the model's own", out)
    assert header, out
    rows = re.findall(r"^ +(\d+)  (.{14})  +([\d.<]+%) +([\d.]+)   (.+)$", out, flags=re.M)
    count = int(header.group(1))
    assert [int(r[0]) for r in rows[:count]] == list(range(1, count + 1))
    # Greedy without a penalty: each token is the likeliest, so the first one listed there is itself.
    for _, _, probability, _, others in rows[:count]:
        assert others.split(" · ")[0].rsplit(" ", 1)[1] == probability
    assert "tokens; probabilities: after temperature, top-k, top-p and min-p" in out  # /tokens sampled
    assert "Tokens are no longer recorded." in err and "unknown /tokens option 'bogus'" in err
