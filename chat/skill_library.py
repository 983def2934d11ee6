"""Users' own skills beside the skills file's: written on the page, saved as versions, owned like chats.

`SkillLibrary` gives each owner their book (the file's skills first, then their own) and does what the
page's Skills editor, the terminal and the API ask of it: save a version, delete (with undo), bring an
old version back, export and import in the skills file's format. Where the skills are kept is a
`SkillStore`: the conversation store (chat/store/skills.py), or memory when there is none (`--db none`).

>>> library = SkillLibrary(load_skills(), store.skills)  # doctest: +SKIP
>>> library.save("user:ada", Skill("🧪 Haiku", "Write a haiku about {message}."), note="first try")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import SkillError
from .skills import Skill, SkillBook
from .skills_file import parse_skills, skill_from_data, skills_yaml

Json = dict[str, Any]
FRESH_FOR_S = 2.0  # how long an owner's book is used as read (a skill saved by another app instance: seen after it)


@dataclass(frozen=True)
class SavedSkill:
    """One saved version of a user's skill, as a `SkillStore` keeps it."""

    id: str  # the skill's (the same for all its versions)
    name: str
    version: int
    definition: Json  # `Skill.to_data()`: the skills file's form
    note: str
    saved_at: float


class SkillStore(Protocol):
    """Where users' skills are kept. Every call names the owner: nobody reaches another's skills."""

    def owned_skills(self, owner: str) -> list[SavedSkill]:
        """The newest version of each of the owner's skills (deleted ones left out), oldest skill first."""
        ...

    def skill_versions(self, owner: str, skill_id: str) -> list[SavedSkill]:
        """Every version of the skill, newest first ([] for a skill that isn't the owner's)."""
        ...

    def save_skill(self, owner: str, skill_id: str | None, definition: Json, note: str) -> SavedSkill:
        """A new skill (`skill_id` None), or the skill's next version."""
        ...

    def delete_skill(self, owner: str, skill_id: str) -> None:
        ...

    def restore_skill(self, owner: str, skill_id: str) -> None:
        ...


class MemorySkills:
    """A `SkillStore` in this process's memory: without a conversation store, skills last until the app stops."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], list[SavedSkill]] = {}  # (owner, id) → versions, oldest first
        self._deleted: set[tuple[str, str]] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def owned_skills(self, owner: str) -> list[SavedSkill]:
        with self._lock:
            return [versions[-1] for key, versions in self._versions.items() if key[0] == owner and key not in self._deleted]

    def skill_versions(self, owner: str, skill_id: str) -> list[SavedSkill]:
        with self._lock:
            return list(reversed(self._versions.get((owner, skill_id), [])))

    def save_skill(self, owner: str, skill_id: str | None, definition: Json, note: str) -> SavedSkill:
        with self._lock:
            key = (owner, skill_id or f"memory-{next(self._ids)}")
            versions = self._versions.setdefault(key, [])
            saved = SavedSkill(key[1], str(definition["name"]), len(versions) + 1, definition, note, time.time())
            versions.append(saved)
            return saved

    def delete_skill(self, owner: str, skill_id: str) -> None:
        with self._lock:
            self._deleted.add((owner, skill_id))

    def restore_skill(self, owner: str, skill_id: str) -> None:
        with self._lock:
            self._deleted.discard((owner, skill_id))


class SkillLibrary:
    """The skills file's skills, shared by all, and each owner's own (`store`)."""

    def __init__(self, file_book: SkillBook, store: SkillStore | None = None, fresh_for_s: float = FRESH_FOR_S):
        self.file_book = file_book
        self.store: SkillStore = store if store is not None else MemorySkills()
        self.fresh_for_s = fresh_for_s
        self._books: dict[str, tuple[float, SkillBook]] = {}  # owner → (when read, their book)
        self._lock = threading.Lock()

    def book(self, owner: str) -> SkillBook:
        """What `owner` can use: the file's skills, then their own (one whose name or command the file has since
        taken is left out: the file's comes first). Read again after `fresh_for_s` (a chat asks at every step of an
        answer: not a database query each time), and at once after a change made here."""
        now = time.monotonic()
        with self._lock:
            kept = self._books.get(owner)
        if kept is not None and now - kept[0] < self.fresh_for_s:
            return kept[1]
        book = self._read_book(owner)
        with self._lock:
            self._books[owner] = (now, book)
        return book

    def _changed(self, owner: str) -> None:
        with self._lock:
            self._books.pop(owner, None)

    def _read_book(self, owner: str) -> SkillBook:
        skills = list(self.file_book)
        names, commands = {skill.name for skill in skills}, {skill.command for skill in skills}
        for saved in self.owned(owner):
            skill = _skill_of(saved)
            if skill is not None and skill.name not in names and skill.command not in commands:
                skills.append(skill)
                names.add(skill.name)
                commands.add(skill.command)
        return SkillBook(skills)

    def owned(self, owner: str) -> list[SavedSkill]:
        return self.store.owned_skills(owner) if owner else []

    def is_owned(self, owner: str, name: str) -> bool:
        return self._saved(owner, name) is not None

    def save(self, owner: str, skill: Skill, note: str = "", replacing: str | None = None) -> Skill:
        """Saves `skill` as the owner's (a new version of `replacing`, the name it had: a rename keeps its versions).
        Refused with `SkillError` when the file or another of the owner's skills has its name or command."""
        if not owner:
            raise SkillError("skills are saved for a signed-in user or a browser; this chat has neither")
        if skill.name in self.file_book:
            raise SkillError(f"the skills file has a skill named {skill.name!r}: give yours another name", "name")
        previous = self._saved(owner, replacing) if replacing is not None else None
        if replacing is not None and previous is None:
            raise SkillError(f"you have no skill named {replacing!r} (deleted in another tab?)")
        for other in self.book(owner):
            if previous is not None and other.name == previous.name:
                continue
            if other.name == skill.name:
                raise SkillError(f"you have a skill named {skill.name!r} already: give this one another name", "name")
            if other.command == skill.command:
                raise SkillError(f"/{skill.command} is the command of {other.name!r}: give this skill another", "command")
        saved = self.store.save_skill(owner, previous.id if previous else None, skill.to_data(), note.strip())
        self._changed(owner)
        return dataclasses.replace(skill, version=saved.version)

    def delete(self, owner: str, name: str) -> str:
        """Deletes the owner's skill; the id `restore` takes to bring it back."""
        saved = self._require(owner, name)
        self.store.delete_skill(owner, saved.id)
        self._changed(owner)
        return saved.id

    def restore(self, owner: str, skill_id: str) -> None:
        self.store.restore_skill(owner, skill_id)
        self._changed(owner)

    def versions(self, owner: str, name: str) -> list[SavedSkill]:
        """The skill's versions, newest first."""
        saved = self._saved(owner, name)
        return self.store.skill_versions(owner, saved.id) if saved is not None else []

    def find(self, owner: str, name: str, version: int | None = None) -> Skill:
        """The skill `name` (or /command) of the owner's book, at `version` (None: as it is now). Raises SkillError
        naming what there is: the skills file's skills have no versions."""
        book = self.book(owner)
        skill = book.find(name) or next((s for s in book if s.command == name.lower() or s.name.lower() == name.lower()), None)
        if skill is None:
            raise SkillError(f"no skill called {name!r}; known skills: {', '.join(book.names())}")
        if version is None or version == skill.version:
            return skill
        if skill.version is None:
            raise SkillError(f"{skill.name} is the skills file's: it has no versions (a skill of yours has one per Save)")
        saved = next((saved for saved in self.versions(owner, skill.name) if saved.version == version), None)
        found = _skill_of(saved) if saved is not None else None
        if found is None:
            raise SkillError(f"{skill.name} has no version {version} (it is at version {skill.version})")
        return found

    def bring_back(self, owner: str, name: str, version: int) -> Skill:
        """Saves the skill's `version` again, as its newest version (nothing is rewritten)."""
        old = next((saved for saved in self.versions(owner, name) if saved.version == version), None)
        if old is None:
            raise SkillError(f"{name!r} has no version {version}")
        return self.save(owner, skill_from_data(old.definition), f"version {version} brought back", replacing=name)

    def export(self, owner: str) -> str:
        """The owner's skills as a skills file (`--skills` takes it, Import reads it back)."""
        skills = [skill for saved in self.owned(owner) if (skill := _skill_of(saved)) is not None]
        return skills_yaml(skills, "Skills exported from the chat workbench: Import on its page reads them back,\n"
                                   "and `--skills FILE` starts the app with them.")

    def import_text(self, owner: str, text: str, source: str = "skills file") -> list[Skill]:
        """Saves each skill of a skills file as the owner's (one they have: a new version). All or nothing: a file with
        an error (named with its line) or a skill the file's skills clash with saves none."""
        incoming = list(parse_skills(text, source))
        clash = next((skill.name for skill in incoming if skill.name in self.file_book), None)
        if clash:
            raise SkillError(f"{source}: {clash!r} is a skill of the app's skills file already; rename it to import it")
        SkillBook([*self.file_book, *incoming])  # a command the file's skills have: refused before anything is saved
        return [self.save(owner, skill, "imported", replacing=skill.name if self.is_owned(owner, skill.name) else None)
                for skill in incoming]

    def _saved(self, owner: str, name: str) -> SavedSkill | None:
        return next((saved for saved in self.owned(owner) if saved.name == name), None)

    def _require(self, owner: str, name: str) -> SavedSkill:
        saved = self._saved(owner, name)
        if saved is None:
            raise SkillError(f"you have no skill named {name!r}" + (" (the skills file's can't be deleted)"
                                                                     if name in self.file_book else ""))
        return saved


def _skill_of(saved: SavedSkill) -> Skill | None:
    try:
        return dataclasses.replace(skill_from_data(saved.definition, saved.name), version=saved.version)
    except SkillError:
        return None  # (saved by a release whose skills this one can't read)
