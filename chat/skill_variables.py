"""A skill's variables: values it asks for besides the message (`{language}` in its template), typed and checked,
with a small form on the page (chat/skills.py fills them in)."""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Any

from .errors import SkillError

short = reprlib.Repr()  # bounded repr: a value quoted in an error may be huge or self-referencing
short.maxstring = 60

VARIABLE_TYPES = ("text", "long text", "choice", "number")
MAX_VARIABLES = 6  # a skill's variables (the page's form beside the message box has this many fields)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Variable:
    """A value a skill asks for besides the message (`{language}` in its template), with a small form on the page.

    `type`: one of VARIABLE_TYPES. A blank value means the default; a required one must then have a value."""

    name: str
    type: str = "text"
    default: str = ""
    required: bool = False
    choices: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        problem = self.problem()
        if problem:
            raise SkillError(problem[1], f"variables.{self.name}.{problem[0]}")

    @property
    def placeholder(self) -> str:
        return "{" + self.name + "}"

    def problem(self) -> tuple[str, str] | None:
        """(the key it is about, why) when this cannot be a variable; None when it can."""
        if not isinstance(self.name, str) or not _VARIABLE_NAME.fullmatch(self.name):
            return "name", f"variable name {short.repr(self.name)} must be a word of letters, digits and _ (such as language)"
        if self.name == "message":
            return "name", "{message} is the user's text; a variable needs another name"
        if self.type not in VARIABLE_TYPES:
            return "type", f"variable {self.name}: type must be one of {', '.join(VARIABLE_TYPES)}, not {short.repr(self.type)}"
        if self.type == "choice" and not self.choices:
            return "choices", f"variable {self.name}: a choice needs its choices, such as [German, French]"
        if self.type != "choice" and self.choices:
            return "choices", f"variable {self.name}: only a choice has choices (its type is {self.type})"
        problem = self.value_problem(self.default, "its default") if self.default.strip() else None
        return ("default", f"variable {problem}") if problem else None

    def value_problem(self, value: str, what: str = "the value") -> str | None:
        if self.type == "number" and not _NUMBER.fullmatch(value.strip()):
            return f"{self.name} must be a number, {what} is {short.repr(value)}"
        if self.type == "choice" and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; {what} is {short.repr(value)}"
        if self.type == "text" and "\n" in value:
            return f"{self.name} must be one line (a long text variable may have several)"
        return None

    def value_of(self, given: str | None) -> str:
        """The text that goes in for `given` (blank: the default); `SkillError` for a value it can't take."""
        value = given if given is not None and given.strip() else self.default
        if not value.strip():
            if self.required:
                raise SkillError(f"{self.name} needs a value")
            return ""
        value = value.strip() if self.type in ("number", "choice", "text") else value
        problem = self.value_problem(value)
        if problem:
            raise SkillError(problem)
        return value

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for key, value in (("description", self.description), ("choices", list(self.choices)), ("default", self.default)):
            if value:
                data[key] = value
        if self.required:
            data["required"] = True
        return data
