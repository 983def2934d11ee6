"""Prompt skills: a tested prompt wrapped around the user's message (translate, proof-read ...).

Skills live in `skills.yaml` (README, "Skills"). Loading is strict: every mistake in the file
is one `SkillError` naming file, line, skill and problem, because the person editing the file
sees nothing but that message. Expansion never uses `str.format`: the user's text goes in as is.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import SettingsError, SkillError
from .settings import FIELD_NAMES, GenerationSettings

PLACEHOLDER = "{message}"
DEFAULT_SKILLS_PATH = Path(__file__).resolve().parent.parent / "skills.yaml"
SKILL_KEYS = ("name", "template", "description", "settings", "stop")

# What people write by habit instead of {message}: the course notebooks' USER_MESSAGE,
# Jinja's {{ message }}, other names. Only used to word an error.
_NEAR_MISS = re.compile(
    r"USER_MESSAGE|\{\{?\s*(?:message|msg|text|input|prompt|query|content|user_message)\s*\}?\}", re.I
)
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")  # CommonMark: <= 3 spaces, a run of 3+, the rest
_short = reprlib.Repr()  # bounded repr: a value quoted in an error may be huge or self-referencing
_short.maxstring = 60


def _template_problem(template: str) -> str | None:
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
            raise SkillError(f"a skill needs a name, not {_short.repr(self.name)}")
        problem = _template_problem(self.template) if isinstance(self.template, str) else "template must be text"
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


def load_skills(path: str | Path = DEFAULT_SKILLS_PATH) -> SkillBook:
    """Read and parse a skills file; a missing, unreadable or non-UTF-8 file is a SkillError too."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SkillError(f"{path}: no such skills file") from None
    except OSError as error:
        raise SkillError(f"{path}: cannot read the skills file ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8-sig")  # (a BOM, as some Windows editors write, is fine)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        bad = data[error.start]
        raise SkillError(f"{path}, line {line}: not UTF-8 text (byte 0x{bad:02x}); save it as UTF-8") from None
    return parse_skills(text, str(path))


def parse_skills(text: str, source: str = "skills.yaml") -> SkillBook:
    """Parse skills YAML; any problem is one SkillError naming source, line, skill and problem."""
    try:
        loader = yaml.SafeLoader(text)  # rejects characters YAML forbids, right away
        try:
            root = loader.get_single_node()
            return _Parser(loader, source).book(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:  # the parser's; ours are raised as SkillError already
        raise _syntax_error(error, text, source) from None
    except RecursionError:
        raise SkillError(f"{source}: the YAML is nested too deeply (or an alias refers to itself)") from None


def _syntax_error(error: yaml.YAMLError, text: str, source: str) -> SkillError:
    if isinstance(error, yaml.reader.ReaderError):
        line = text[: error.position].count("\n") + 1
        return SkillError(f"{source}, line {line}: character U+{error.character:04X} is not allowed in YAML")
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{source}, line {mark.line + 1}" if mark else source
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
    context_mark = getattr(error, "context_mark", None)
    if getattr(error, "context", None) and context_mark and getattr(error, "problem_mark", None):
        context = f"{getattr(error, 'context')} on line {context_mark.line + 1}"
        # PyYAML splits some sentences in two: "expected a single document" + "but found ..."
        problem = f"{context} {problem}" if problem.startswith("but ") else f"{problem} ({context})"
    if "'\\t'" in problem:
        problem += "; indent with spaces, not tabs"
    return SkillError(f"{where}: YAML syntax error: {problem}")


def _describe(value: Any) -> str:
    """A value as a person would call it, for 'must be X, not Y' messages."""
    if value is None or isinstance(value, (list, dict)):
        return {type(None): "an empty value", list: "a list", dict: "a mapping"}[type(value)]
    return f"{'the text' if isinstance(value, str) else type(value).__name__} {_short.repr(value)}"


def _unknown(what: str, key: str, known: Iterable[str], listed_as: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {key!r}{hint}; {listed_as}: {', '.join(known)}"


class _Parser:
    """Walks the composed YAML nodes rather than plain data, so every error can name its line."""

    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader, self.source = loader, source

    def fail(self, node: Node | None, problem: str, skill: str = "") -> NoReturn:
        line = f", line {node.start_mark.line + 1}" if node else ""
        raise SkillError(f"{self.source}{line}{', ' + skill if skill else ''}: {problem}")

    def value(self, node: Node, skill: str = "") -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except RecursionError:
            raise  # parse_skills words this one
        except Exception as error:  # noqa: BLE001 - PyYAML's constructors raise IndexError on `!!int ''`,
            # KeyError on `!!bool x`, ValueError on `!!int x` ...: all mean "this value is malformed"
            problem = getattr(error, "problem", None) or str(error)
        self.fail(node, f"cannot read this value: {problem}", skill)  # outside `except`: no chained traceback

    def kind(self, node: Node, skill: str = "") -> str:
        if isinstance(node, (MappingNode, SequenceNode)):
            return "a mapping" if isinstance(node, MappingNode) else "a list"
        return _describe(self.value(node, skill))

    def empty(self, node: Node | None, skill: str) -> bool:
        """An optional key that is absent or left empty (`stop:`) means 'not given'."""
        return node is None or (isinstance(node, ScalarNode) and self.value(node, skill) is None)

    def pairs(self, node: MappingNode, skill: str = "") -> dict[str, tuple[Node, Node]]:
        """key -> (key node, value node); a key written twice is an error, not 'the last one wins'."""
        pairs: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(key_node, "'<<' merge keys are not supported; use an anchor for a whole value", skill)
            key = self.value(key_node, skill)
            if not isinstance(key, str):
                self.fail(key_node, f"keys must be text, not {_describe(key)}", skill)
            if key in pairs:
                self.fail(key_node, f"{key!r} appears twice (also on line {pairs[key][0].start_mark.line + 1})", skill)
            pairs[key] = (key_node, value_node)
        return pairs

    def book(self, root: Node | None) -> SkillBook:
        if root is None:
            self.fail(None, "the file is empty (or only comments); it needs a 'skills:' list")
        if not isinstance(root, MappingNode):
            self.fail(root, f"the top level must be a mapping with the key 'skills:', not {self.kind(root)}")
        top = self.pairs(root)
        for key, (key_node, _) in top.items():
            if key != "skills":
                self.fail(key_node, f"unknown top-level key {key!r}; the file holds only 'skills:'")
        if "skills" not in top:
            self.fail(root, "no 'skills:' key; the file must start with 'skills:'")
        node = top["skills"][1]
        if not isinstance(node, SequenceNode):
            self.fail(node, f"'skills:' must be a list of skills ('- name: ...'), not {self.kind(node)}")
        if not node.value:
            self.fail(node, "'skills:' is an empty list; add at least one skill")
        skills: dict[str, tuple[Skill, int]] = {}  # name -> (skill, line of its name)
        for number, skill_node in enumerate(node.value, 1):
            skill, line = self.skill(skill_node, f"skill #{number}")
            if skill.name in skills:
                first = skills[skill.name][1]
                self.fail(skill_node, f"duplicate name (first used on line {first})", f"skill {skill.name!r}")
            skills[skill.name] = (skill, line)
        return SkillBook(skill for skill, _ in skills.values())

    def skill(self, node: Node, label: str) -> tuple[Skill, int]:
        if not isinstance(node, MappingNode):
            self.fail(node, f"a skill must be a mapping with 'name:' and 'template:', not {self.kind(node)}", label)
        pairs = self.pairs(node, label)
        name = self.text(pairs, "name", node, label).strip()
        if "\n" in name:
            self.fail(pairs["name"][1], "name must be one line", label)
        label = f"skill {name!r}"  # from here on, errors name the skill
        for key, (key_node, _) in pairs.items():
            if key in FIELD_NAMES:
                self.fail(key_node, f"unknown key {key!r}; generation settings go under 'settings:'", label)
            if key not in SKILL_KEYS:
                self.fail(key_node, _unknown("key", key, SKILL_KEYS, "allowed keys"), label)
        template = self.text(pairs, "template", node, label)
        problem = _template_problem(template)
        if problem:
            self.fail(pairs["template"][1], problem, label)
        description = self.text(pairs, "description", node, label, required=False).strip()
        settings, stop = self.settings(pairs, label), self.stop(pairs, label)
        return Skill(name, template, description, settings, stop), pairs["name"][1].start_mark.line + 1

    def text(self, pairs: dict, key: str, node: Node, label: str, required: bool = True) -> str:
        value_node = pairs.get(key, (None, None))[1]
        if not required and self.empty(value_node, label):
            return ""
        if value_node is None:
            self.fail(node, f"missing '{key}:'", label)
        value = self.value(value_node, label)
        if not isinstance(value, str):
            self.fail(value_node, f"{key} must be text (in quotes), not {_describe(value)}", label)
        if not value.strip():
            self.fail(value_node, f"{key} is empty", label)
        return value

    def settings(self, pairs: dict, label: str) -> dict[str, Any]:
        """Overrides, each checked by GenerationSettings on its own line; coerced values are kept."""
        node = pairs.get("settings", (None, None))[1]
        if self.empty(node, label):
            return {}
        if not isinstance(node, MappingNode):
            self.fail(node, f"settings must be a mapping such as 'temperature: 0.2', not {self.kind(node)}", label)
        overrides = {}
        for key, (key_node, value_node) in self.pairs(node, label).items():
            if key not in FIELD_NAMES:
                self.fail(key_node, _unknown("setting", key, FIELD_NAMES, "known settings"), label)
            value = self.value(value_node, label)
            try:
                overrides[key] = getattr(GenerationSettings().merged({key: value}), key)
                continue
            except SettingsError as error:
                problem = str(error)
            except (ValueError, OverflowError):  # int(inf), int(nan) inside the range check
                problem = f"{key} must be a finite number, got {_short.repr(value)}"
            self.fail(value_node, problem, label)
        return overrides

    def stop(self, pairs: dict, label: str) -> tuple[str, ...]:
        node = pairs.get("stop", (None, None))[1]
        if self.empty(node, label):
            return ()
        if not isinstance(node, SequenceNode):
            self.fail(node, f'stop must be a list of strings such as ["\\n\\n"], not {self.kind(node)}', label)
        stops = [self.value(item, label) for item in node.value]
        for item, value in zip(node.value, stops):
            if not isinstance(value, str) or not value:
                self.fail(item, f"stop strings must be non-empty text, not {_describe(value)}", label)
        return tuple(stops)
