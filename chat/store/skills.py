"""Users' own skills in the conversation store (chat/skill_library.py's `SkillStore`): every query names the
owner, so an owner never reaches another's skills, whatever id they send."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from ..skill_library import SavedSkill
from ..tree import new_id
from .rows import storable
from .schema import skill_versions, user_skills

if TYPE_CHECKING:
    from .store import Store


class StoredSkills:
    """The `SkillStore` of a `Store` (`store.skills`)."""

    def __init__(self, store: "Store"):
        self._store = store

    def owned_skills(self, owner: str) -> list[SavedSkill]:
        query = (select(user_skills, skill_versions).join(skill_versions, (skill_versions.c.skill_id == user_skills.c.id)
                                                          & (skill_versions.c.version == user_skills.c.version))
                 .where(user_skills.c.owner == owner, user_skills.c.deleted_at.is_(None)).order_by(user_skills.c.created_at))
        with self._store.engine.connect() as connection:
            return [_saved(row) for row in connection.execute(query).mappings()]

    def skill_versions(self, owner: str, skill_id: str) -> list[SavedSkill]:
        query = (select(user_skills.c.id, user_skills.c.name, skill_versions).join(skill_versions, skill_versions.c.skill_id == user_skills.c.id)
                 .where(user_skills.c.owner == owner, user_skills.c.id == skill_id).order_by(skill_versions.c.version.desc()))
        with self._store.engine.connect() as connection:
            return [_saved(row) for row in connection.execute(query).mappings()]

    def save_skill(self, owner: str, skill_id: str | None, definition: dict[str, Any], note: str) -> SavedSkill:
        now, name = time.time(), storable(str(definition["name"])) or ""
        with self._store._write() as connection:
            if skill_id is None:
                skill_id, version = new_id(), 1
                connection.execute(insert(user_skills).values(id=skill_id, owner=owner, name=name, version=1, created_at=now,
                                                              updated_at=now, deleted_at=None))
            else:
                newest = connection.execute(select(func.max(skill_versions.c.version)).join(
                    user_skills, user_skills.c.id == skill_versions.c.skill_id).where(
                    user_skills.c.id == skill_id, user_skills.c.owner == owner)).scalar()
                if newest is None:
                    raise LookupError("no such skill")  # (the library looked it up among the owner's: not reached)
                version = newest + 1
                connection.execute(update(user_skills).where(user_skills.c.id == skill_id, user_skills.c.owner == owner)
                                   .values(name=name, version=version, updated_at=now))
            connection.execute(insert(skill_versions).values(skill_id=skill_id, version=version, definition=_storable(definition),
                                                             note=storable(note) or "", created_at=now))
        return SavedSkill(skill_id, name, version, definition, note, now)

    def delete_skill(self, owner: str, skill_id: str) -> None:
        self._set_deleted(owner, skill_id, time.time())
        self._store.purge_deleted()  # (those deleted longer ago than Undo reaches)

    def restore_skill(self, owner: str, skill_id: str) -> None:
        self._set_deleted(owner, skill_id, None)

    def _set_deleted(self, owner: str, skill_id: str, when: float | None) -> None:
        with self._store._write() as connection:
            connection.execute(update(user_skills).where(user_skills.c.id == skill_id, user_skills.c.owner == owner)
                               .values(deleted_at=when))


def _saved(row: Any) -> SavedSkill:
    return SavedSkill(row["id"], row["name"], row["version"], dict(row["definition"]), row["note"], row["created_at"])


def _storable(data: Any) -> Any:
    """`data` with NUL characters as ␀ in every text (PostgreSQL's JSON can't hold NUL)."""
    if isinstance(data, str):
        return storable(data)
    if isinstance(data, dict):
        return {key: _storable(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_storable(value) for value in data]
    return data
