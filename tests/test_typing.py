"""What the user types is never lost: messages sent while an answer streams, and text typed meanwhile.

Real Chromium on the app (tiny model, answers sharing each step as app.py runs them), typing as a
person does: characters one by one, Enter, the Send button. Each test acts at a chosen moment of a
stream and checks what the user would see: every message shown, in order, and answered; the box
holding exactly what they typed. `gradio_client` can't see these: the first is the browser's own
event rule (a pending event drops the next trigger), the second is what the page does to the box.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time

import pytest

from chat.settings import GenerationSettings
from tests.helpers.apps import running_app
from tests.helpers.browser import WAIT_MS, answers, message_box, open_tab, questions, set_max_new_tokens, shown_prompt
from tests.helpers.engines import RecordingEngine, finished, make_engine
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.browser
ANSWER_TOKENS = 80  # long enough to type a line while it streams, short enough to wait for
STEP_S = 0.025  # each model step takes at least this long: 40 tokens/s, a real model's pace on a CPU
TYPING_DELAY_MS = 40  # between key presses: a quick typist


@pytest.fixture(scope="module")
def engine(tiny_chat_dir):
    # batching: as app.py runs it; endless: answers run to their limit, "stop: max tokens" marks the end
    engine = make_engine(tiny_chat_dir, batching=True, endless=True)
    # The tiny model answers a line in a tenth of a second, faster than anyone types: paced, a person
    # has time to act in the middle of an answer, as with a real model.
    engine.model.register_forward_pre_hook(paced_step)
    return RecordingEngine(engine)


def paced_step(*_) -> None:  # (a pre-hook that returned something would replace the model's inputs)
    time.sleep(STEP_S)
    HOLD.step()


class Hold:
    """Within `for_(steps)`, the model takes that many more steps, then waits until the block ends: what a test does
    there happens while the answer streams and before it ends, however slowly a busy machine types."""

    def __init__(self) -> None:
        self.left: int | None = None  # steps before the model waits (None: it never does)
        self.released = threading.Event()

    def step(self) -> None:
        if self.left is not None and self.left <= 0:
            self.released.wait()
        elif self.left is not None:
            self.left -= 1

    @contextlib.contextmanager
    def for_(self, steps: int):
        self.released.clear()
        self.left = steps
        try:
            yield
        finally:
            self.left = None
            self.released.set()


HOLD = Hold()


@pytest.fixture(scope="module")
def app(engine):
    with running_app(engine, GenerationSettings(max_new_tokens=ANSWER_TOKENS, temperature=1.0)) as (demo, url):
        yield url


@pytest.fixture
def page(browser, app):
    with open_tab(browser, app) as page:
        yield page


def type_and_enter(page, text: str) -> None:
    message_box(page).press_sequentially(text, delay=TYPING_DELAY_MS)
    message_box(page).press("Enter")


def quick_send(page, text: str) -> None:
    """As fast as a person can: the whole text at once (pasted), Enter, and the box is empty again.

    The page reads the box a few milliseconds after Enter (Gradio gathers inputs asynchronously):
    text put there sooner, faster than anyone can paste, would be read as this message.
    """
    message_box(page).fill(text)
    message_box(page).press("Enter")
    sent(page)


def sent(page) -> None:
    page.wait_for_function("() => document.querySelector('#message textarea')?.value === ''", timeout=WAIT_MS)


def wait_answer_text(page) -> None:
    page.wait_for_function("() => (document.querySelector('[data-testid=\"bot\"]:last-of-type')?.innerText || '').length > 20",
                           timeout=WAIT_MS)


def wait_answered(page, question: str) -> None:
    """Until `question` is the chat's last question, an answer follows it, and that answer ran to its end."""
    page.wait_for_function(
        """(question) => {
            const users = [...document.querySelectorAll('[data-testid="user"]')];
            const status = document.querySelector('#status')?.innerText || '';
            return users.length && users[users.length - 1].innerText.trim() === question && status.includes('stop: max tokens');
        }""",
        arg=question, timeout=60_000,
    )


def shown_questions(page) -> list[str]:
    return [text.strip() for text in questions(page).all_inner_texts()]


def prompt_turns(page) -> list[str]:
    """The user turns of the exact prompt of the last turn (the Prompt section)."""
    return re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", shown_prompt(page), re.S)


MOMENTS = ["before the first token", "mid-answer", "as it ends"]


def send_at(page, when: str, first: str, then: str, press=None) -> None:
    """Sends `first`, then `then` at a moment of the first answer's stream (by Enter, or `press`)."""
    if when == "as it ends":
        set_max_new_tokens(page, 4)  # an answer that ends within moments of its first token
    quick_send(page, first)
    if when == "mid-answer":
        wait_answer_text(page)
        message_box(page).press_sequentially(then, delay=TYPING_DELAY_MS)  # typed while it streams
    else:
        if when == "as it ends":
            page.wait_for_function("() => document.querySelector('[data-testid=\"bot\"]')?.innerText.length > 0", timeout=WAIT_MS)
        message_box(page).fill(then)
    press() if press else message_box(page).press("Enter")
    sent(page)


@pytest.mark.parametrize("when", MOMENTS)
def test_enter_while_an_answer_streams_sends_the_new_message(page, engine, when):
    send_at(page, when, "Write a long story about a cat.", "And of Germany?")
    wait_answered(page, "And of Germany?")
    assert shown_questions(page) == ["Write a long story about a cat.", "And of Germany?"]
    assert answers(page).count() == 2 and answers(page).last.inner_text().strip()
    assert message_box(page).input_value() == ""
    assert prompt_turns(page) == ["Write a long story about a cat.", "And of Germany?"]
    if when == "mid-answer":
        first = next(g for g in engine.generations if "cat" in g.fitted.prompt.text and "Germany" not in g.fitted.prompt.text)
        assert finished(first) and first.stats.stop_reason == "cancelled"


@pytest.mark.parametrize("when", MOMENTS)
def test_the_send_button_while_an_answer_streams_sends_the_new_message(page, when):
    send_at(page, when, "Write a long story about a cat.", "And of Germany?",
            press=lambda: page.get_by_role("button", name="Send").click())
    wait_answered(page, "And of Germany?")
    assert shown_questions(page) == ["Write a long story about a cat.", "And of Germany?"]
    assert answers(page).count() == 2 and message_box(page).input_value() == ""


def test_text_typed_while_an_answer_streams_stays_in_the_box(page, engine):
    quick_send(page, "Say hello in five words.")
    wait_answer_text(page)
    streaming = engine.generations[-1]
    with HOLD.for_(steps=20):  # pages stream while the typing begins; the answer can't end before it is done
        message_box(page).press_sequentially("What about goodbye?", delay=TYPING_DELAY_MS)
        assert not finished(streaming), "the answer ended before the typing did: nothing was tested"
    wait_answered(page, "Say hello in five words.")
    page.wait_for_timeout(500)  # a page still on its way would land now
    assert message_box(page).input_value() == "What about goodbye?"


def test_two_messages_sent_quickly_both_show_in_order_and_the_last_is_answered(page):
    quick_send(page, "What is the capital of France?")
    quick_send(page, "And of Germany?")
    wait_answered(page, "And of Germany?")
    assert shown_questions(page) == ["What is the capital of France?", "And of Germany?"]
    first_answer = answers(page).first.inner_text().strip()
    assert answers(page).count() == 2 and first_answer  # a partial answer, or the note that it never began
    # Question, answer, question: the model gets turns it can take, the last message last.
    assert prompt_turns(page) == ["What is the capital of France?", "And of Germany?"]


def test_typed_retry_while_an_answer_streams_gives_a_new_answer(page, engine):
    quick_send(page, "Tell me a long story.")
    wait_answer_text(page)
    first = engine.generations[-1]
    type_and_enter(page, "/retry")
    assert wait_for(lambda: engine.generations[-1] is not first, 10), "the retry never started"
    wait_answered(page, "Tell me a long story.")
    assert first.stats.stop_reason == "cancelled"
    assert shown_questions(page) == ["Tell me a long story."] and answers(page).count() == 1
    assert message_box(page).input_value() == ""


def test_retry_pressed_while_a_retried_answer_streams_retries_again(page, engine):
    quick_send(page, "Tell me a long story.")
    wait_answer_text(page)
    started = [engine.generations[-1]]
    for _ in range(2):
        page.get_by_role("button", name="Retry").click()
        assert wait_for(lambda: engine.generations[-1] is not started[-1], 10), "Retry did nothing"
        started.append(engine.generations[-1])
        wait_answer_text(page)
    wait_answered(page, "Tell me a long story.")
    assert [g.stats.stop_reason for g in started] == ["cancelled", "cancelled", "max tokens"]
    assert shown_questions(page) == ["Tell me a long story."] and answers(page).count() == 1


def test_undo_while_an_answer_streams_puts_the_message_back(page):
    """(With a draft in the box, the message goes back before it: tests/test_ui_handlers.py. In the
    browser that case is not asserted here: Gradio itself, a bare Textbox and Button with none of
    this app's code, now and then keeps the box's own value over an update that lands just after
    the click that blurred it, in about 1 click in 8 on a busy machine.)"""
    quick_send(page, "First question")
    wait_answered(page, "First question")
    quick_send(page, "Take this back")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"user\"]').length === 2", timeout=WAIT_MS)
    wait_answer_text(page)
    page.get_by_role("button", name="Undo").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"user\"]').length === 1", timeout=WAIT_MS)
    assert wait_for(lambda: message_box(page).input_value() == "Take this back", 5), message_box(page).input_value()
    page.wait_for_timeout(500)
    assert shown_questions(page) == ["First question"] and answers(page).count() == 1
    assert message_box(page).input_value() == "Take this back"


def test_clear_while_an_answer_streams_empties_the_chat_and_keeps_the_draft(page):
    quick_send(page, "Talk about anything.")
    wait_answer_text(page)
    message_box(page).press_sequentially("my draft", delay=TYPING_DELAY_MS)
    page.locator("button", has_text="Clear").click()  # ours; the chat's trash icon does the same
    page.wait_for_function("() => !document.querySelector('[data-testid=\"bot\"], [data-testid=\"user\"]')", timeout=WAIT_MS)
    page.wait_for_timeout(1000)  # the stopped stream must not bring the chat back
    assert questions(page).count() == 0 and answers(page).count() == 0
    assert message_box(page).input_value() == "my draft"


def test_instructions_typed_while_an_answer_streams_stay(page):
    page.get_by_text("Instructions", exact=True).first.click()
    quick_send(page, "Talk about anything.")
    wait_answer_text(page)
    box = page.locator("#instructions textarea")
    box.fill("")
    box.press_sequentially("You are a pirate.", delay=TYPING_DELAY_MS)
    wait_answered(page, "Talk about anything.")
    page.wait_for_timeout(500)
    assert box.input_value() == "You are a pirate."


def test_a_message_the_full_queue_refuses_comes_back_into_the_box(browser, engine):
    """One answer at a time and room for one waiting request: a third request is refused."""
    with running_app(engine, GenerationSettings(max_new_tokens=4096, temperature=1.0), concurrency=1, queue_size=1) as (demo, url):
        with open_tab(browser, url) as busy, open_tab(browser, url) as page:
            quick_send(busy, "Talk for a long time.")
            wait_answer_text(busy)
            quick_send(page, "I wait in the queue.")  # its answer takes the one waiting place
            page.wait_for_function("() => document.querySelectorAll('[data-testid=\"user\"]').length === 1", timeout=WAIT_MS)
            type_and_enter(page, "Refused, but kept.")
            page.get_by_text("currently busy").first.wait_for(timeout=WAIT_MS)  # Gradio's "queue full" toast
            assert wait_for(lambda: message_box(page).input_value() == "Refused, but kept.", 5), message_box(page).input_value()
            busy.get_by_role("button", name="Stop").click()
            page.get_by_role("button", name="Stop").click()
