"""Prompt skills: a tested prompt wrapped around the user's message (translate, proof-read ...).

A `Skill` is checked when made and expands a message into its template; a `SkillBook` holds a file's
skills in order (chat/skills_file.py reads the file). Expansion never uses `str.format`: the user's text
goes in as is, and fences around it are lengthened so it can't close them.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from .errors import SkillError

PLACEHOLDER = "{message}"

# What people write by habit instead of {message}: the course notebooks' USER_MESSAGE,
# Jinja's {{ message }}, other names. Only used to word an error.
_NEAR_MISS = re.compile(
    r"USER_MESSAGE|\{\{?\s*(?:message|msg|text|input|prompt|query|content|user_message)\s*\}?\}", re.I
)
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")  # CommonMark: <= 3 spaces, a run of 3+, the rest
short = reprlib.Repr()  # bounded repr: a value quoted in an error may be huge or self-referencing
short.maxstring = 60


def template_problem(template: str) -> str | None:
    """Why `template` cannot be a skill's template, or None if it can."""
    count = template.count(PLACEHOLDER)
    if count > 1:
        return f"template has {count} {PLACEHOLDER} placeholders; it needs exactly one"
    if count == 1:  # {{message}} is a str.format/Jinja habit; it would wrap the text in braces
        return "template has {{message}}; write {message} with single braces" if "{{message}}" in template else None
    near = _NEAR_MISS.search(template)
    if near:
        return f"template has no {PLACEHOLDER} placeholder (found {near[0]!r}; use {PLACEHOLDER})"
    return f"template has no {PLACEHOLDER} placeholder; put {PLACEHOLDER} where the user's text goes"


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(re.escape(char) + "+", text)), default=0)


def _closes(line: str, run: str) -> bool:
    """CommonMark: a fence closes with the same character, at least as many, then only spaces."""
    m = _FENCE.match(line)
    return m is not None and m[2][0] == run[0] and len(m[2]) >= len(run) and not m[3].strip()


def _grow(line: str, length: int) -> str:
    """`line`, a fence (the caller matched it), lengthened to `length` fence characters."""
    match = _FENCE.match(line)
    assert match is not None
    indent, run, rest = match.groups()
    return indent + run[0] * max(length, len(run)) + rest


def _guard_block(before: str, after: str, message: str) -> tuple[str, str] | None:
    """If the placeholder is inside a fence, lengthen both fence lines past every run in `message`.

    A fence closes only with a run at least as long as its opener, so the user's own ``` lines
    cannot end the fence and have the text after them read as instructions. None: no fence.
    """
    head, opened = before.split("\n"), None
    for i, line in enumerate(head[:-1]):  # head[-1] is the placeholder's own line
        if opened:
            opened = None if _closes(line, opened[1]) else opened
        elif (m := _FENCE.match(line)) and not (m[2][0] == "`" and "`" in m[3]):
            opened = (i, m[2])  # (a backtick fence's info string may not hold backticks)
    if opened is None:
        return None
    index, run = opened
    need = _longest_run(message, run[0]) + 1
    if need <= len(run):
        return before, after
    head[index] = _grow(head[index], need)
    tail = after.split("\n")
    for j in range(1, len(tail)):  # tail[0] is the rest of the placeholder's line
        if _closes(tail[j], run):
            tail[j] = _grow(tail[j], need)
            break
    return "\n".join(head), "\n".join(tail)


def _guard_inline(before: str, after: str, message: str) -> tuple[str, str, str]:
    """The same for a code span, ```{message}```, which closes only with an equally long run."""
    left, right = re.search(r"`+\Z", before), re.match(r"`+", after)
    if not (left and right and len(left[0]) == len(right[0])):
        return before, after, message
    run = "`" * max(len(left[0]), _longest_run(message, "`") + 1)
    if message.startswith("`") or message.endswith("`"):  # else they would join the span's run;
        message = f" {message} "  # CommonMark strips one space each side
    return before[: left.start()] + run, run + after[right.end() :], message


@dataclass(frozen=True)
class Skill:
    """A named prompt around the user's message, with optional setting overrides and stop strings."""

    name: str
    template: str
    description: str = ""
    # Not hashed: a mapping is unhashable, and names are unique in a SkillBook anyway.
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SkillError(f"a skill needs a name, not {short.repr(self.name)}")
        problem = template_problem(self.template) if isinstance(self.template, str) else "template must be text"
        if problem:
            raise SkillError(f"skill {self.name!r}: {problem}")
        # Frozen all the way down: nobody can change a loaded skill's settings or stops.
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "stop", tuple(self.stop))

    def expand(self, message: str) -> str:
        """The template with `message` inserted verbatim, fences lengthened around it if needed."""
        before, after = self.template.split(PLACEHOLDER, 1)
        guarded = _guard_block(before, after, message)
        if guarded:
            return guarded[0] + message + guarded[1]
        before, after, message = _guard_inline(before, after, message)
        return before + message + after


class SkillBook:
    """The skills in file order; the first one is the default."""

    def __init__(self, skills: Iterable[Skill]) -> None:
        self._skills: dict[str, Skill] = {}
        for skill in skills:
            if skill.name in self._skills:
                raise SkillError(f"two skills are named {skill.name!r}")
            self._skills[skill.name] = skill
        if not self._skills:
            raise SkillError("a skill book needs at least one skill")

    def names(self) -> list[str]:
        return list(self._skills)

    @property
    def default(self) -> Skill:
        return next(iter(self._skills.values()))

    def get(self, name: str) -> Skill:
        if isinstance(name, str) and name in self._skills:
            return self._skills[name]
        raise SkillError(f"unknown skill {name!r}; known skills: {', '.join(self._skills)}")

    def pick(self, name: str | None) -> Skill:
        """The skill a user picked: by name, the default when none is named (unknown: `SkillError`)."""
        return self.default if not name else self.get(name)

    def find(self, name: str | None) -> Skill | None:
        """The skill of that name, if this book has it (a message may name one from another skills file)."""
        return self._skills.get(name) if name is not None else None

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())

    def __len__(self) -> int:
        return len(self._skills)

    def __contains__(self, name: object) -> bool:
        return name in self._skills
