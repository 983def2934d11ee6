"""Prompt skills: a tested prompt wrapped around the user's message (translate, proof-read ...).

A `Skill` is checked when made and expands a message into its template, with the values of its
variables (`{language}`: only declared names are placeholders, other braces are text); a `SkillBook`
holds a file's skills in order (chat/skills_file.py reads the file), each also picked by its
`/command`. Expansion never uses `str.format`: the user's text goes in as is, and fences around it
are lengthened so it can't close them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping

from .errors import SkillError
from .skill_variables import MAX_VARIABLES, Variable, short

PLACEHOLDER = "{message}"

# What people write by habit instead of {message}: the course notebooks' USER_MESSAGE,
# Jinja's {{ message }}, other names. Only used to word an error.
_NEAR_MISS = re.compile(
    r"USER_MESSAGE|\{\{?\s*(?:message|msg|text|input|prompt|query|content|user_message)\s*\}?\}", re.I
)
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")  # CommonMark: <= 3 spaces, a run of 3+, the rest


def template_problem(template: str, variables: Iterable["Variable"] = ()) -> str | None:
    """Why `template` cannot be a skill's template (with those variables), or None if it can."""
    missing = [variable.placeholder for variable in variables if variable.placeholder not in template]
    if missing:
        return f"template has no {', '.join(missing)} for {'its variables' if len(missing) > 1 else 'its variable'}"
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


Block = tuple[int, int | None, str, list[int]]  # a fenced block: (opener line, closer line or None, run, placeholder lines)


def _fence_blocks(lines: list[str], is_placeholder_line: Callable[[str], Any]) -> list[Block]:
    """The template's fenced blocks that hold placeholders: (opener line, closer line or None, run, placeholder lines).

    A line with a placeholder is never a fence line (the user's text is not known when the fence is read)."""
    blocks: list[Block] = []
    opened: Block | None = None
    for index, line in enumerate(lines):
        if is_placeholder_line(line):
            if opened:
                opened[3].append(index)
            continue
        if opened:
            if _closes(line, opened[2]):
                blocks.append((opened[0], index, opened[2], opened[3]))
                opened = None
        elif (m := _FENCE.match(line)) and not (m[2][0] == "`" and "`" in m[3]):
            opened = (index, None, m[2], [])  # (a backtick fence's info string may not hold backticks)
    if opened:
        blocks.append(opened)  # unclosed: it runs to the end of the prompt
    return [block for block in blocks if block[3]]


def _guard_inline(before: str, after: str, value: str) -> tuple[str, str, str]:
    """A code span, ```{message}```, closes only with an equally long run: both runs grow past every run in `value`."""
    left, right = re.search(r"`+\Z", before), re.match(r"`+", after)
    if not (left and right and len(left[0]) == len(right[0])):
        return before, after, value
    run = "`" * max(len(left[0]), _longest_run(value, "`") + 1)
    if value.startswith("`") or value.endswith("`"):  # else they would join the span's run;
        value = f" {value} "  # CommonMark strips one space each side
    return before[: left.start()] + run, run + after[right.end() :], value


def fill(template: str, placeholders: re.Pattern, values: Mapping[str, str]) -> str:
    """`template` with each placeholder (`placeholders` captures its name) replaced by its value verbatim.

    Fences around a placeholder are lengthened past every run in the values they hold, so that the user's own ```
    lines cannot end the fence and have the text after them read as instructions (a code span's runs likewise)."""
    lines = template.split("\n")
    fenced: set[int] = set()
    for opener, closer, run, inside in _fence_blocks(lines, placeholders.search):
        held = [values[m[1]] for index in inside for m in placeholders.finditer(lines[index])]
        need = max(_longest_run(value, run[0]) for value in held) + 1
        if need > len(run):
            lines[opener] = _grow(lines[opener], need)
            if closer is not None:
                lines[closer] = _grow(lines[closer], need)
        fenced.update(inside)
    return "\n".join(_fill_line(line, placeholders, values, index in fenced) for index, line in enumerate(lines))


def _fill_line(line: str, placeholders: re.Pattern, values: Mapping[str, str], fenced: bool) -> str:
    pieces = placeholders.split(line)  # text, name, text, name, ..., text
    texts, names = pieces[0::2], pieces[1::2]
    inserted = []
    for i, name in enumerate(names):
        value = values[name]
        if not fenced:
            texts[i], texts[i + 1], value = _guard_inline(texts[i], texts[i + 1], value)
        inserted.append(value)
    return "".join(text + value for text, value in zip(texts, inserted)) + texts[-1]


# The app's own commands (the page's and the terminal's): a skill's /command can't be one of them.
APP_COMMANDS = frozenset({"retry", "skill", "skills", "undo", "model", "models", "unload", "continue", "reproduce",
                          "versions", "tokens", "prev", "next", "clear", "system", "save", "load", "new", "chats", "open",
                          "help", "quit", "exit", "compare", "pick", "vote"})
_COMMAND = re.compile(r"[a-z0-9][a-z0-9-]*")
_COMMAND_AT_START = re.compile(r"/([A-Za-z0-9][A-Za-z0-9_-]*)(?:[ \t]*\n|[ \t]+|$)")


def command_for(name: str) -> str:
    """The /command a skill's name gives: its letters and digits, lower case, words joined by '-'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return "-".join(re.findall(r"[a-z0-9]+", ascii_name))


def split_command(text: str) -> tuple[str, str] | None:
    """(command word, the rest) when `text` starts with a /command ("/summarize Long text ..."); None for a
    message ("/usr/bin/env is ...", or any text that starts with a space: how a message may begin with '/')."""
    match = _COMMAND_AT_START.match(text)
    return (match[1].lower(), text[match.end():]) if match else None


@dataclass(frozen=True)
class Skill:
    """A named prompt around the user's message, with optional setting overrides, stop strings and variables.

    `command`: the word that picks it for one message (`/summarize ...`); by default, from its name."""

    name: str
    template: str
    description: str = ""
    # Not hashed: a mapping is unhashable, and names are unique in a SkillBook anyway.
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    stop: tuple[str, ...] = ()
    command: str = ""
    variables: tuple[Variable, ...] = ()
    version: int | None = field(default=None, compare=False)  # a user's skill: which saved version (None: the file's)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SkillError(f"a skill needs a name, not {short.repr(self.name)}")
        object.__setattr__(self, "variables", tuple(self.variables))
        problem = (template_problem(self.template, self.variables) if isinstance(self.template, str) else "template must be text")
        problem = problem or self._command_problem() or self._variables_problem()
        if problem:
            raise SkillError(f"skill {self.name!r}: {problem}")
        object.__setattr__(self, "command", self.command or command_for(self.name))
        # Frozen all the way down: nobody can change a loaded skill's settings or stops.
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "stop", tuple(self.stop))

    def _command_problem(self) -> str | None:
        command = self.command or command_for(self.name)
        if not command:
            return "its name has no letters to make a /command of; give it a 'command:'"
        if not _COMMAND.fullmatch(command):
            return f"command {short.repr(command)} must be lower-case letters, digits and '-' (such as summarize), without the /"
        if command in APP_COMMANDS:
            return f"/{command} is one of the app's own commands; give the skill another 'command:'"
        return None

    def _variables_problem(self) -> str | None:
        if len(self.variables) > MAX_VARIABLES:
            return f"{len(self.variables)} variables is more than the {MAX_VARIABLES} a skill may have"
        names = [variable.name for variable in self.variables]
        twice = next((name for name in names if names.count(name) > 1), None)
        return f"two variables are named {twice}" if twice else None

    @property
    def placeholders(self) -> re.Pattern:
        """The placeholders its template fills: {message} and its variables' (other braces are text)."""
        names = ["message", *(variable.name for variable in self.variables)]
        return re.compile(r"\{(" + "|".join(names) + r")\}")

    def values(self, given: Mapping[str, str] | None = None) -> dict[str, str]:
        """Each variable's value for `given` (blank or missing: its default); `SkillError` naming the one that can't be."""
        given = given or {}
        try:
            return {variable.name: variable.value_of(given.get(variable.name)) for variable in self.variables}
        except SkillError as error:
            raise SkillError(f"{self.name}: {error}") from None

    def expand(self, message: str, values: Mapping[str, str] | None = None) -> str:
        """The template with `message` and the variables' values inserted verbatim, fences lengthened around them."""
        return fill(self.template, self.placeholders, {"message": message, **self.values(values)})

    def to_data(self) -> dict[str, Any]:
        """The skill as the skills file writes it (chat/skills_file.py `skills_yaml` reads it back the same)."""
        data: dict[str, Any] = {"name": self.name}
        if self.command != command_for(self.name):
            data["command"] = self.command
        if self.description:
            data["description"] = self.description
        if self.variables:
            data["variables"] = {variable.name: variable.to_data() for variable in self.variables}
        data["template"] = self.template
        if self.settings:
            data["settings"] = dict(self.settings)
        if self.stop:
            data["stop"] = list(self.stop)
        return data


class SkillBook:
    """The skills in file order; the first one is the default."""

    def __init__(self, skills: Iterable[Skill]) -> None:
        self._skills: dict[str, Skill] = {}
        self._commands: dict[str, Skill] = {}
        for skill in skills:
            if skill.name in self._skills:
                raise SkillError(f"two skills are named {skill.name!r}")
            if skill.command in self._commands:
                raise SkillError(f"skills {self._commands[skill.command].name!r} and {skill.name!r} both have the command "
                                 f"/{skill.command}; give one a 'command:'")
            self._skills[skill.name] = skill
            self._commands[skill.command] = skill
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

    def by_command(self, word: str) -> Skill:
        """The skill a /command names (`word` without the /); unknown: `SkillError` saying where they are listed."""
        skill = self._commands.get(word.lower())
        if skill is None:
            raise SkillError(f"unknown command /{word}: /skills lists the skills' commands (start the message with a space "
                             "to send it as it is)")
        return skill

    def find(self, name: str | None) -> Skill | None:
        """The skill of that name, if this book has it (a message may name one from another skills file)."""
        return self._skills.get(name) if name is not None else None

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())

    def __len__(self) -> int:
        return len(self._skills)

    def __contains__(self, name: object) -> bool:
        return name in self._skills
