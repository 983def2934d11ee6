"""Compare side by side: what a contender is, and what a comparison keeps (its columns, its vote).

A comparison answers one message with 2 to 4 *contenders*: the chat as it is with one thing changed
(a model, a skill or one of its versions, the instructions, some settings). Its answers are siblings
below the message in the conversation tree (chat/tree.py), each with its provenance; the message keeps
the `Comparison`: its columns in the order shown (shuffled when blind), and the vote, which is locked
once cast. chat/comparing.py runs one; chat/leaderboard.py rates the contenders from the votes.

A contender is written as the terminal's /compare and the page's boxes take it: changes separated by
spaces, each `key=value` (a value with spaces in quotes).

>>> Contender.parse("temperature=1.2 instructions='Be terse.'", lambda name, version: None).changes()
['instructions “Be terse.”', 'temperature 1.2']
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Callable, Mapping

from .errors import ChatError, SettingsError
from .settings import SETTINGS, GenerationSettings
from .skills import Skill

MIN_CONTENDERS, MAX_CONTENDERS = 2, 4  # four columns still read side by side; the local engine batches four answers
LETTERS = "ABCD"
SHORT_INSTRUCTIONS = 40  # characters of the instructions a label quotes
_VERSIONED = re.compile(r"^(?P<name>.+?)(?:@| v)(?P<version>\d+)$")  # "summarize@2", "Summarize v2"

class Outcome(StrEnum):
    WIN = "win"  # one column was better than the others
    TIE = "tie"
    BOTH_BAD = "both bad"  # for the ratings, a tie: no column was better


@dataclass(frozen=True)
class Vote:
    """One judged comparison: the labels of its columns (2 to 4 contenders, each label says what the contender is,
    e.g. "SmolLM2 · 💬 Chat · temperature 1.2"), and the outcome; `winner` is an index into `contenders` for WIN."""

    contenders: tuple[str, ...]
    outcome: Outcome
    winner: int | None = None

    def __post_init__(self) -> None:
        if (self.outcome == Outcome.WIN) != (self.winner is not None):
            raise ValueError(f"a {self.outcome!s} vote {'needs a' if self.winner is None else 'has no'} winner")
        if self.winner is not None and not 0 <= self.winner < len(self.contenders):
            raise ValueError(f"winner {self.winner} is not one of the {len(self.contenders)} columns")


FindSkill = Callable[[str, "int | None"], Skill]  # (a name or /command, a version or None: the newest) → the skill


@dataclass(frozen=True)
class Contender:
    """What one column changes from the chat: None (or empty `settings`) keeps the chat's."""

    model: str | None = None
    skill: Skill | None = None
    instructions: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)  # sampling settings by name

    @classmethod
    def parse(cls, spec: str, find_skill: FindSkill) -> "Contender":
        """`temperature=1.2 model=NAME skill=summarize@2 instructions="Be terse."`; blank: the chat as it is.
        Raises ChatError naming the change it can't take."""
        try:
            words = shlex.split(spec)
        except ValueError as error:
            raise ChatError(f"{spec!r}: {error} (put a value with spaces in quotes)") from None
        model, skill, instructions, settings = None, None, None, {}
        for word in words:
            key, equals, value = word.partition("=")
            key = key.strip().lower().replace("-", "_")
            if not equals or not key:
                raise ChatError(f"{word!r}: write each change as key=value (temperature=1.2, model=NAME, skill=NAME@2, "
                                "instructions=\"...\")")
            if key == "model":
                model = value
            elif key == "skill":
                skill = _skill(value, find_skill)
            elif key == "instructions":
                instructions = value
            else:
                settings[key] = _setting(key, value)
        GenerationSettings().merged(settings)  # (a value out of range is named now, before anything runs)
        return cls(model, skill, instructions, settings)

    def changes(self) -> list[str]:
        """What it changes, in words ("model X", "skill 💎 Summarize v2", "temperature 1.2")."""
        said = [f"model {self.model}"] if self.model else []
        if self.skill is not None:
            said.append(f"skill {skill_words(self.skill)}")
        if self.instructions is not None:
            said.append(f"instructions “{short(self.instructions)}”" if self.instructions.strip() else "no instructions")
        said += [f"{name.replace('_', ' ')} {_number(value)}" for name, value in self.settings.items()]
        return said

    def describe(self) -> str:
        return " · ".join(self.changes()) or "as the chat is"


def _skill(value: str, find_skill: FindSkill) -> Skill:
    """A skill by its name or /command, with @N (or " vN") for a version; a skill whose name ends so is found first."""
    name = value.strip().removeprefix("/")
    found = _VERSIONED.match(name)
    if found is None:
        return find_skill(name, None)
    try:
        return find_skill(name, None)  # ("GPT v2" may be a skill's whole name)
    except ChatError:
        return find_skill(found["name"], int(found["version"]))


def _setting(name: str, value: str) -> float | int:
    declared = next((s for s in SETTINGS if s.name == name), None)
    if declared is None:
        raise ChatError(f"{name!r} is not something a contender can change: model, skill, instructions, or a setting "
                        f"({', '.join(s.name for s in SETTINGS)})")
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
    return int(number) if declared.kind is int and number == int(number) else number


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def short(text: str, limit: int = SHORT_INSTRUCTIONS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def skill_words(skill: Skill) -> str:
    return skill.name + (f" v{skill.version}" if skill.version else "")


def label(model: str, skill: Skill, instructions: str, settings: GenerationSettings) -> str:
    """What a contender *is*, in full (the leaderboard's name for it): the model, the skill and its version, the
    instructions, the settings that differ from the app's defaults (the seed aside: it varies by design)."""
    defaults = asdict(GenerationSettings())
    changed = [f"{s.name.replace('_', ' ')} {_number(getattr(settings, s.name))}" for s in SETTINGS
               if s.name != "seed" and getattr(settings, s.name) != defaults[s.name]]
    parts = [model, skill_words(skill), instructions_words(instructions), *changed]
    return " · ".join(parts)


def instructions_words(instructions: str) -> str:
    """The instructions in a label: quoted when short; cut, with a fingerprint of the whole, when long (two long
    instructions that begin alike are two contenders)."""
    if not instructions.strip():
        return "no instructions"
    quoted = short(instructions)
    if quoted == " ".join(instructions.split()):
        return f"instructions “{quoted}”"
    return f"instructions “{quoted}” #{hashlib.sha256(instructions.encode()).hexdigest()[:6]}"


@dataclass
class Carried:
    """What the chat takes on when it goes on with a column: its model (with the model's defaults), then the
    instructions and settings the contender changed (None, empty: the chat's stay)."""

    model: str
    instructions: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "instructions": self.instructions, "settings": self.settings}

    @classmethod
    def from_json(cls, data: Any) -> "Carried":
        data = data if isinstance(data, dict) else {}
        instructions, settings = data.get("instructions"), data.get("settings")
        return cls(str(data.get("model", "")), instructions if isinstance(instructions, str) else None,
                   dict(settings) if isinstance(settings, dict) else {})


@dataclass
class Column:
    """One answer of a comparison: its message, what it is (`label`), what it changed from the chat (`changes`)."""

    answer_id: str
    label: str
    changes: str
    carried: Carried = field(default_factory=lambda: Carried(""))

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer_id, "label": self.label, "changes": self.changes, "carried": self.carried.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Column":
        return cls(str(data.get("answer", "")), str(data.get("label", "?")), str(data.get("changes", "")),
                   Carried.from_json(data.get("carried")))


@dataclass
class Comparison:
    """What a compared message keeps: its columns in the order shown, whether they were blind, the vote (locked once
    cast: a blind vote that could be changed after the names show would not be blind) and the column the chat went on
    with."""

    columns: list[Column]
    blind: bool = True
    outcome: Outcome | None = None
    winner: int | None = None  # the better column (outcome WIN)
    voted_at: float | None = None
    continued: int | None = None  # the column the chat went on with (Continue with this answer)
    imported: bool = False  # read from a file: its vote shows, and was counted where it was cast (not again here)

    @staticmethod
    def ordered(columns: list[Column], blind: bool, shuffle: random.Random) -> list[Column]:
        """The columns as shown: shuffled when blind, so that the first contender is not always A."""
        shown = list(columns)
        if blind:
            shuffle.shuffle(shown)
        return shown

    @property
    def revealed(self) -> bool:
        """The names show: it was not blind, or the vote is in."""
        return not self.blind or self.outcome is not None

    def letter(self, index: int) -> str:
        return LETTERS[index]

    def vote(self, outcome: Outcome, winner: int | None = None) -> None:
        """Records the vote; a second one is refused (the names show after the first)."""
        if self.outcome is not None:
            raise ChatError(f"this comparison was judged already ({self.verdict()}): a vote can't change once the names show")
        if (outcome is Outcome.WIN) != (winner is not None) or (winner is not None and not 0 <= winner < len(self.columns)):
            raise ChatError("a vote names the better column, or is a tie, or both bad")
        self.outcome, self.winner, self.voted_at = outcome, winner, time.time()

    def verdict(self) -> str:
        """The vote in words ("B is better", "tie", "both bad"); "" before it."""
        if self.outcome is Outcome.WIN and self.winner is not None:
            return f"{self.letter(self.winner)} is better"
        return str(self.outcome) if self.outcome is not None else ""

    def as_vote(self) -> Vote | None:
        """The vote as the leaderboard counts it (None: not judged, or judged where the file it came from was written)."""
        if self.outcome is None or self.imported:
            return None
        return Vote(tuple(column.label for column in self.columns), self.outcome, self.winner)

    def index_of(self, answer_id: str) -> int | None:
        return next((i for i, column in enumerate(self.columns) if column.answer_id == answer_id), None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"columns": [column.to_json() for column in self.columns], "blind": self.blind}
        if self.outcome is not None:
            data.update(outcome=str(self.outcome), winner=self.winner, voted_at=self.voted_at)
        if self.continued is not None:
            data["continued"] = self.continued
        if self.imported:
            data["imported"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Comparison":
        """As `to_json` wrote it (what can't be read is left out: a vote this release doesn't know is no vote)."""
        columns = [Column.from_json(c) for c in data.get("columns") or [] if isinstance(c, dict)]
        outcome = data.get("outcome")
        known = outcome in {str(o) for o in Outcome}
        winner = data.get("winner") if isinstance(data.get("winner"), int) and 0 <= data["winner"] < len(columns) else None
        continued = data.get("continued") if isinstance(data.get("continued"), int) else None
        return cls(columns, bool(data.get("blind", True)), Outcome(str(outcome)) if known else None,
                   winner if known else None, data.get("voted_at") if known else None,
                   continued if continued is not None and 0 <= continued < len(columns) else None, bool(data.get("imported")))

    def read_from_file(self, ids: Mapping[str, str]) -> "Comparison":
        """The comparison as a file brings it: its answers' ids mapped (a file read gives messages new ids), its vote
        shown but not counted again (a chat downloaded and uploaded would count it twice, and anyone can write a file)."""
        columns = [Column(ids.get(c.answer_id, c.answer_id), c.label, c.changes, c.carried) for c in self.columns]
        return Comparison(columns, self.blind, self.outcome, self.winner, self.voted_at, self.continued, imported=True)
