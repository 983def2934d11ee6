"""Stopping: end a turn exactly at a stop string, and never show one.

`StopStringFilter` sits on the streamed text of every backend (the model's side of stopping, for
the local engine, is in local/criteria.py). It passes on only text that can no longer turn into a
stop string, holds back a tail that might be the start of one (e.g. "\\nUs" while "\\nUser:" is a
stop string), and cuts the text at the first complete stop string. It also holds back a trailing
U+FFFD: half a character, which the stream's end may leave.
"""

from __future__ import annotations

REPLACEMENT_CHARACTER = "\ufffd"  # what decoding makes of an incomplete UTF-8 sequence


class StopStringFilter:
    """Feed streamed chunks in, get text safe to show out.

    >>> f = StopStringFilter(["\\nUser:"])
    >>> f.feed("Hello\\nUs"), f.feed("er: hi"), f.stopped
    ('Hello', '', True)
    """

    def __init__(self, stop_strings: list[str] | tuple[str, ...]):
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.stopped = False
        self.stop_string: str | None = None  # which stop string ended the text
        self._pending = ""  # received, not yet released

    def feed(self, chunk: str) -> str:
        """Returns the part of all text so far that is now safe to show."""
        if self.stopped:
            return ""
        self._pending += chunk
        hit = self._first_stop()
        if hit is not None:
            index, stop = hit
            safe, self._pending = self._pending[:index], ""
            self.stopped, self.stop_string = True, stop
            return safe
        # The streamer decodes half a multi-byte character (max tokens hit mid-emoji) as U+FFFD;
        # only the stream's last chunk can end in one, so holding it back leaves it to `flush`.
        partial_character = len(self._pending) - len(self._pending.rstrip(REPLACEMENT_CHARACTER))
        keep = max(self._longest_partial_stop(), partial_character)
        safe = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(safe) :]
        return safe

    def flush(self) -> str:
        """At the end of generation: a held-back tail that never became a stop string is text."""
        rest, self._pending = ("" if self.stopped else self._pending), ""
        return rest

    def _first_stop(self) -> tuple[int, str] | None:
        hits = [(self._pending.find(s), s) for s in self.stop_strings]
        hits = [(i, s) for i, s in hits if i >= 0]
        return min(hits, default=None)

    def _longest_partial_stop(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        text = self._pending
        longest = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
