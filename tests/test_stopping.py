"""StopStringFilter as a table (as litgpt tests its stop handling), plus properties over all splits."""

from __future__ import annotations

import threading

import pytest
import torch

from chat.local.criteria import CancelCriteria
from chat.stopping import StopStringFilter

USER = "\nUser:"


def stream(chunks, stops):
    """What a reader sees: every fed chunk's safe part, then the flush at the end of generation."""
    f = StopStringFilter(stops)
    shown = "".join(f.feed(chunk) for chunk in chunks) + f.flush()
    return shown, f.stopped, f.stop_string


@pytest.mark.parametrize(
    "chunks, stops, shown, stopped",
    [
        pytest.param(["Hello\nUs", "er: hi"], [USER], "Hello", True, id="split-across-two-chunks"),
        pytest.param(list("Hi there\nUser: more"), [USER], "Hi there", True, id="one-char-per-chunk"),
        pytest.param(["Hello\nUs"], [USER], "Hello\nUs", False, id="partial-at-end-released-by-flush"),
        pytest.param(["Hello\nUse", "d to it"], [USER], "Hello\nUsed to it", False, id="partial-that-diverges"),
        pytest.param(["\nUser: hi"], [USER], "", True, id="stop-at-the-very-start"),
        pytest.param(["a\nUser: b", " more text"], [USER], "a", True, id="text-after-stop-dropped"),
        pytest.param(["a END b STOP c"], ["STOP", "END"], "a ", True, id="earliest-wins-not-first-listed"),
        pytest.param(["x EN", "D y STOP"], ["STOP", "END"], "x ", True, id="earliest-wins-across-chunks"),
        pytest.param(["xab", "d"], ["abc", "abd"], "x", True, id="shared-prefix-second-completes"),
        pytest.param(["xab", "c"], ["abc", "abd"], "x", True, id="shared-prefix-first-completes"),
        pytest.param(["xab", "e"], ["abc", "abd"], "xabe", False, id="shared-prefix-neither"),
        pytest.param(["xab", "aab", "ab"], ["abab"], "xaba", True, id="self-overlapping-stop"),
        pytest.param(["one\nU", "ser two"], ["\nU", USER], "one", True, id="stop-is-prefix-of-another"),
        pytest.param(["Grüße 😀", "\nUs", "er: x"], [USER], "Grüße 😀", True, id="emoji-before-stop"),
        pytest.param(["a😀", "😀b"], ["😀😀"], "a", True, id="emoji-stop-split"),
        pytest.param(["Grüße 😀"], ["😀!"], "Grüße 😀", False, id="emoji-partial-stop-released"),
        pytest.param(["ünï", "cödé"], ["ödé"], "ünïc", True, id="umlaut-stop"),
        pytest.param(["abc", "def"], [], "abcdef", False, id="no-stops"),
        pytest.param(["abc"], [""], "abc", False, id="empty-stop-string-ignored"),
        pytest.param(["", "Hi", "", "\nUser:", ""], [USER], "Hi", True, id="empty-chunks"),
        pytest.param([], [USER], "", False, id="no-chunks"),
        pytest.param(["a\ufffd", "b"], [], "a\ufffdb", False, id="replacement-char-mid-stream-released"),
    ],
)
def test_stop_table(chunks, stops, shown, stopped):
    assert stream(chunks, stops)[:2] == (shown, stopped)


def test_reports_which_stop_string_ended_the_text():
    assert stream(["x EN", "D y STOP"], ["STOP", "END"])[2] == "END"
    assert stream(["nothing"], ["STOP"])[2] is None


def test_nothing_is_released_after_a_stop():
    f = StopStringFilter([USER])
    assert f.feed("ok\nUser: x") == "ok"
    assert (f.feed("more"), f.flush()) == ("", "")


def test_trailing_partial_character_is_held_for_flush():
    # Max tokens hit in the middle of an emoji: the streamer's last chunk ends in U+FFFD.
    f = StopStringFilter([])
    assert f.feed("Grüße \ufffd") == "Grüße "
    assert f.flush() == "\ufffd"  # the engine drops it there


TEXTS = [
    ("Hello there!\nUser: how are you", (USER, "\nAssistant:")),
    ("Sure 😀 Grüße\nAssistant: fake\nUser: x", (USER, "\nAssistant:")),
    ("abababx abab", ("abab", "bx")),
    ("no stop in here at all\nUs", (USER,)),
]


def check_stream(chunks: list[str], stops) -> None:
    """At every point the shown text is a prefix of the answer; nothing more than a stop's length is held."""
    text = "".join(chunks)
    cuts = [text.find(s) for s in stops if s in text]
    answer = text[: min(cuts)] if cuts else text
    longest = max(len(s) for s in stops)
    f, shown, received = StopStringFilter(stops), "", ""
    for chunk in chunks:
        received += chunk
        shown += f.feed(chunk)
        assert answer.startswith(shown), (chunks, shown)  # never a stop string or a piece of one
        if not f.stopped:
            assert len(received) - len(shown) < longest, (chunks, shown)  # holds back no more than needed
    shown += f.flush()
    assert shown == answer, chunks
    assert f.stopped == bool(cuts)


@pytest.mark.parametrize("text, stops", TEXTS)
def test_every_pair_of_split_points(text, stops):
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            check_stream([text[:i], text[i:j], text[j:]], stops)


@pytest.mark.parametrize("text, stops", TEXTS)
def test_one_character_at_a_time(text, stops):
    check_stream(list(text), stops)


def test_cancel_criteria_stops_every_sequence_once_set():
    event = threading.Event()
    criteria = CancelCriteria(event)
    ids, scores = torch.zeros((2, 3), dtype=torch.long), torch.zeros((2, 5))
    assert criteria(ids, scores).tolist() == [False, False]
    event.set()
    assert criteria(ids, scores).tolist() == [True, True]


def test_the_stop_string_criterion_is_built_once_per_tokenizer_and_stop_strings(tiny_engine):
    """Building one reads the whole vocabulary (over a second for SmolLM2's 49k tokens): a request
    with stop strings must not pay that each time before its first token."""
    from chat.local.criteria import stop_string_criteria

    tokenizer = tiny_engine.tokenizer
    first = stop_string_criteria(tokenizer, ("\nUser:", "###"))
    assert stop_string_criteria(tokenizer, ("\nUser:", "###")) is first
    assert stop_string_criteria(tokenizer, ("###",)) is not first
