"""The page's skill editor as plain data: a skill's keys as the editor's boxes hold them, and back.

The boxes are read by the skills file's own parser, so the rules and their wording are the file's;
where the file's message names a line, the editor's names the box. Variables, settings and stop
strings are written in their boxes as they are in the file (YAML).

>>> SkillFields(name="🧪 Haiku", template="Write a haiku about {message}.").skill()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

import yaml

from .errors import SkillError
from .skills import Skill
from .skills_file import _dump, _syntax_error, parse_skills

LABELS = {"name": "Name", "command": "Command", "description": "Description", "variables": "Variables",
          "template": "Template", "settings": "Settings", "stop": "Stop strings"}
WRITTEN_AS_YAML = ("variables", "settings", "stop")
_KEY_LINE = re.compile(r"^(?:- |  )([a-z_]+):")  # a skill's key in the file `_dump` writes


@dataclass(frozen=True)
class SkillFields:
    """A skill's keys as text, one per box of the editor (an empty box: the key is not given)."""

    name: str = ""
    command: str = ""
    description: str = ""
    variables: str = ""
    template: str = ""
    settings: str = ""
    stop: str = ""

    @classmethod
    def of(cls, skill: Skill) -> "SkillFields":
        data = skill.to_data()
        variables = "\n".join(f"{name}: {_flow(spec)}" for name, spec in data.get("variables", {}).items())
        settings = "\n".join(f"{name}: {_flow(value)}" for name, value in data.get("settings", {}).items())
        stop = json.dumps(data["stop"], ensure_ascii=False) if data.get("stop") else ""  # (JSON is YAML; its escapes read well)
        return cls(skill.name, data.get("command", ""), skill.description, variables, skill.template, settings, stop)

    def values(self) -> tuple[str, ...]:
        return tuple(getattr(self, key) for key in LABELS)

    def skill(self) -> Skill:
        """The skill the boxes describe; `SkillError` naming the box (its `field`) and the problem, in the file's words."""
        data: dict[str, Any] = {}
        for key in LABELS:
            text = getattr(self, key) or ""
            if key in WRITTEN_AS_YAML:
                value = _read_yaml(text, key)
                if value is not None:
                    data[key] = value
            elif text.strip() or key in ("name", "template"):
                data[key] = text.strip() if key != "template" else text
        document = _dump([data])
        try:
            return next(iter(parse_skills(document, "the editor")))
        except SkillError as error:
            box = _key_at(document, error.line)
            label = LABELS.get(box or "", "")
            raise SkillError(f"{label}: {error.problem}" if label else str(error.problem), box) from None


def empty() -> SkillFields:
    return SkillFields(template="{message}")


def _flow(value: Any) -> str:
    """One line of YAML: a variable as `{type: choice, choices: [German, French]}`, a setting's number as is."""
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=True, width=10_000).strip().removesuffix("\n...")


def _read_yaml(text: str, key: str) -> Any:
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = _syntax_error(error, text, LABELS[key])
        raise SkillError(str(problem), key) from None
    if value is None:  # text that YAML reads as nothing: `### end` is a comment
        example = {"variables": "language: {type: text}", "settings": "temperature: 0.2", "stop": '["###", "\\n\\n"]'}[key]
        raise SkillError(f"{LABELS[key]}: write it as the skills file does, such as {example}", key)
    return value


def _key_at(document: str, line: int | None) -> str | None:
    """The skill's key whose value holds `line` of `document` (None: not a key's)."""
    if line is None:
        return None
    for text in reversed(document.split("\n")[:line]):
        if match := _KEY_LINE.match(text):
            return match[1] if match[1] in LABELS else None
    return None


assert [field.name for field in fields(SkillFields)] == list(LABELS)  # (one box per key, in the file's order)
