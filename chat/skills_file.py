"""The skills file (`skills.yaml`, README "Skills"): read strictly, so that every mistake is one `SkillError`
naming the file, line, skill and problem: the person editing the file sees nothing but that message.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import SettingsError, SkillError
from .settings import FIELD_NAMES, GenerationSettings
from .skill_variables import Variable, short
from .skills import Skill, SkillBook, template_problem

DEFAULT_SKILLS_PATH = Path(__file__).resolve().parent.parent / "skills.yaml"
SKILL_KEYS = ("name", "command", "description", "variables", "template", "settings", "stop")
VARIABLE_KEYS = ("type", "description", "choices", "default", "required")


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
        said = f"character U+{error.character:04X} is not allowed in YAML"
        return SkillError(f"{source}, line {line}: {said}", line=line, problem=said)
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
    return SkillError(f"{where}: YAML syntax error: {problem}", line=mark.line + 1 if mark else None,
                      problem=f"YAML syntax error: {problem}")


def _describe(value: Any) -> str:
    """A value as a person would call it, for 'must be X, not Y' messages."""
    if value is None or isinstance(value, (list, dict)):
        return {type(None): "an empty value", list: "a list", dict: "a mapping"}[type(value)]
    return f"{'the text' if isinstance(value, str) else type(value).__name__} {short.repr(value)}"


def _unknown(what: str, key: str, known: Iterable[str], listed_as: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {key!r}{hint}; {listed_as}: {', '.join(known)}"


class _Parser:
    """Walks the composed YAML nodes rather than plain data, so every error can name its line."""

    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader, self.source = loader, source

    def fail(self, node: Node | None, problem: str, skill: str = "") -> NoReturn:
        number = node.start_mark.line + 1 if node else None
        line = f", line {number}" if number else ""
        raise SkillError(f"{self.source}{line}{', ' + skill if skill else ''}: {problem}", line=number, problem=problem)

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
        variables = self.variables(pairs, label)
        template = self.text(pairs, "template", node, label)
        problem = template_problem(template, variables)
        if problem:
            self.fail(pairs["template"][1], problem, label)
        description = self.text(pairs, "description", node, label, required=False).strip()
        command = self.text(pairs, "command", node, label, required=False).strip().removeprefix("/")
        settings, stop = self.settings(pairs, label), self.stop(pairs, label)
        try:
            skill = Skill(name, template, description, settings, stop, command, variables)
        except SkillError as error:  # the command (the rest was checked above, line by line)
            self.fail(pairs.get("command", pairs["name"])[1], str(error).removeprefix(f"{label}: "), label)
        return skill, pairs["name"][1].start_mark.line + 1

    def variables(self, pairs: dict, label: str) -> tuple[Variable, ...]:
        """`variables:` maps each name to its type, default ... (`language: {type: choice, choices: [German, French]}`)."""
        node = pairs.get("variables", (None, None))[1]
        if self.empty(node, label):
            return ()
        if not isinstance(node, MappingNode):
            self.fail(node, f"variables must be a mapping such as 'language: {{type: text}}', not {self.kind(node)}", label)
        variables = []
        for name, (name_node, spec_node) in self.pairs(node, label).items():
            if self.empty(spec_node, label):
                spec: dict[str, tuple[Node, Node]] = {}
            elif isinstance(spec_node, MappingNode):
                spec = self.pairs(spec_node, label)
            else:
                self.fail(spec_node, f"variable {name} must be a mapping such as '{{type: text, default: ...}}', "
                          f"not {self.kind(spec_node)}", label)
            for key, (key_node, _) in spec.items():
                if key not in VARIABLE_KEYS:
                    self.fail(key_node, _unknown(f"key of variable {name}:", key, VARIABLE_KEYS, "allowed keys"), label)
            values = {key: self.value(value_node, label) for key, (_, value_node) in spec.items()}
            variables.append(self.variable(name, values, name_node, spec, label))
        return tuple(variables)

    def variable(self, name: str, values: dict[str, Any], name_node: Node, spec: dict, label: str) -> Variable:
        def at(key: str) -> Node:
            return spec[key][1] if key in spec else name_node
        for key in ("type", "description"):
            if key in values and not isinstance(values[key], str):
                self.fail(at(key), f"variable {name}: {key} must be text, not {_describe(values[key])}", label)
        choices = values.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
            self.fail(at("choices"), f"variable {name}: choices must be a list of texts such as [German, French]", label)
        default = values.get("default")
        if isinstance(default, bool) or not isinstance(default, (str, int, float, type(None))):
            self.fail(at("default"), f"variable {name}: default must be text or a number, not {_describe(default)}", label)
        required = values.get("required", False)
        if not isinstance(required, bool):
            self.fail(at("required"), f"variable {name}: required must be true or false, not {_describe(required)}", label)
        try:
            return Variable(name, values.get("type") or "text", "" if default is None else str(default), required,
                            tuple(str(choice) for choice in choices), (values.get("description") or "").strip())
        except SkillError as error:  # error.field: variables.NAME.KEY
            key = (error.field or "").rpartition(".")[2]
            self.fail(name_node if key == "name" else at(key), str(error), label)

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
                problem = f"{key} must be a finite number, got {short.repr(value)}"
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


class _Dumper(yaml.SafeDumper):
    """Writes a template of several lines as a block (`|`), as people write them, not as one quoted line."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    block = "\n" in text and not any(line != line.rstrip() for line in text.split("\n"))  # (PyYAML quotes trailing spaces)
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if block else None)


_Dumper.add_representer(str, _text)


def skills_yaml(skills: Iterable[Skill], heading: str = "") -> str:
    """The skills as a skills file (`parse_skills` reads it back to the same skills); `heading`: a comment on top."""
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in heading.splitlines())
    return comment + _dump([skill.to_data() for skill in skills])


def skill_from_data(data: dict[str, Any], source: str = "skill") -> Skill:
    """One skill from `Skill.to_data()`'s form (an answer's provenance keeps it), checked as the file's are."""
    return next(iter(parse_skills(_dump([data]), source)))


def _dump(skills: list[dict[str, Any]]) -> str:
    return yaml.dump({"skills": skills}, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=120)
