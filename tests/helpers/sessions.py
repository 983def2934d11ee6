"""Sessions for tests: the seeds their sampled answers draw come from the test's own id, so they are the
same in every run of the test (a tiny random model may end an answer at once for some seeds, and no test
may pass or fail by what chance draws). `ChatSession` takes its seed generator; nothing is module-level."""

from __future__ import annotations

import os
import random

from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills import SkillBook


def seeds_of_this_test() -> random.Random:
    """A seed generator for the running test: seeded with its id (pytest names it in PYTEST_CURRENT_TEST)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]  # "tests/test_x.py::test_y (call)"
    return random.Random(test)


def seeded_session(engine, skills: SkillBook, instructions: str = "", settings: GenerationSettings | None = None) -> ChatSession:
    """A `ChatSession` as the app makes one, drawing its seeds from `seeds_of_this_test()`."""
    return ChatSession(engine, skills, instructions, settings, seeds=seeds_of_this_test())
