"""The conversation store: SQLite by default, PostgreSQL when several app instances share the work.

One code path for both (SQLAlchemy 2 Core). Every query that reads or changes a conversation names
its owner, so an owner never reaches another's chats, whatever id they send. What the store gets
and gives back are plain messages (`{"role", "content", ...}` plus their `id` and `status`).

>>> store = open_store("sqlite:///chats.sqlite3")  # doctest: +SKIP
>>> chat_id = store.new_chat("alice", instructions="Be brief.")  # doctest: +SKIP
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from platformdirs import user_data_dir
from sqlalchemy import Engine, and_, create_engine, delete, event, func, insert, null, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from ..attachments import split_attachment
from ..errors import StoreError
from ..models import ModelDefaults
from ..tree import new_id
from .connection import WriteLock, reason
from .rows import ChatSummary, MessageStatus, StoredChat, no_such_chat, storable, stored_message
from .skills import StoredSkills
from .schema import (MIGRATIONS, SCHEMA_VERSION, conversations, messages, meta, metadata, model_defaults, skill_versions,
                     token_data, user_skills)

APP_DIR = "chat-workbench"  # under the user data dir (platformdirs)
DEFAULT_FILE = "chats.sqlite3"
NO_STORE = "none"  # --db none: conversations live in memory only, as before
TITLE_CHARS = 60  # a chat's title: the start of its first message
BUSY_TIMEOUT_MS = 5000  # SQLite: how long a writer waits for another before "database is locked"
UNDO_DELETE_S = 24 * 3600  # deleted chats stay restorable this long
# An answer still "streaming" whose text has not been written for this long lost its writer (the
# process died): it reads as interrupted. (A live one is written every few seconds, see record.py;
# judging by age works with several app instances on one database, where no start-up may touch
# another instance's answers.)
STALE_S = 10.0


def default_location() -> Path:
    return Path(user_data_dir(APP_DIR, appauthor=False)) / DEFAULT_FILE


def open_store(location: str | None) -> "Store | None":
    """The store at `location`: None = the default SQLite file, "none" = no store, a path = a SQLite
    file, else a database URL (postgresql://user:password@host/db). Raises StoreError (one line)."""
    if location == NO_STORE:
        return None
    if location is None:
        path = default_location()
        path.parent.mkdir(parents=True, exist_ok=True)
        return Store(f"sqlite:///{path}")
    return Store(location if "://" in location else f"sqlite:///{Path(location).expanduser().resolve()}")


def user_owner(name: str) -> str:
    """The owner key of a named user: a --auth login on the page, --user (or the login name) in the terminal."""
    return f"user:{name}"


def browser_owner(token: str) -> str:
    """The owner key of a browser without --auth: the random token it keeps (never shown to anyone else)."""
    return f"browser:{token}"


class Store:
    """A conversation database, opened and brought up to date (or refused with one clear line)."""

    def __init__(self, url: str, stale_after_s: float = STALE_S):
        self.stale_after_s = stale_after_s  # a "streaming" answer not written for this long lost its writer
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(f"--db {url.split('@')[-1]!r} is neither a file path nor a database URL") from None
        self.shown_url = parsed.render_as_string(hide_password=True)  # never the password
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._lock = threading.Lock() if self.is_sqlite else None  # SQLite: one writer at a time, in order
        try:
            self.engine = self._connect(parsed)
            self._migrate()
            self.skills = StoredSkills(self)  # users' own skills (chat/skill_library.py)
        except StoreError:
            raise
        except (SQLAlchemyError, NoSuchModuleError, OSError) as error:
            raise StoreError(f"can't open the conversation database {self.shown_url}: {reason(error)}") from None

    def __repr__(self) -> str:
        return f"Store({self.shown_url!r})"

    def _connect(self, url: Any) -> Engine:
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True)
        plain_path = url.database and url.database != ":memory:" and not url.database.startswith("file:")
        if plain_path and not Path(url.database).parent.is_dir():
            raise StoreError(f"can't open the conversation database {self.shown_url}: its folder does not exist")
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_settings(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at each checkpoint, fast commits
            cursor.close()

        return engine

    def _migrate(self) -> None:
        """Creates the tables, or upgrades an older database step by step; refuses a newer one."""
        with self.engine.begin() as connection:
            if not self.engine.dialect.has_table(connection, "meta"):
                metadata.create_all(connection)
                connection.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            found = int(connection.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one())
            if found > SCHEMA_VERSION:
                raise StoreError(f"the conversation database {self.shown_url} was made by a newer release of this app "
                                 f"(schema {found}; this one knows up to {SCHEMA_VERSION}): upgrade the app")
            for version in range(found, SCHEMA_VERSION):
                MIGRATIONS[version](connection)
            # Written even when nothing changed: a read-only database is found now, not at the first message.
            connection.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    def secret(self, key: str) -> str:
        """A random value kept in the database, made on first use (shared by every instance on it)."""
        with self._write() as connection:
            value = connection.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            if value is None:
                value = secrets.token_urlsafe(32)
                connection.execute(insert(meta).values(key=key, value=value))
        return value

    def _write(self):
        """A transaction for changes (serialised in this process for SQLite, which has one writer)."""
        return WriteLock(self._lock, self.engine)

    # -- conversations -------------------------------------------------------------------------

    def new_chat(self, owner: str, instructions: str = "", skill: str | None = None,
                 settings: dict[str, Any] | None = None, title: str = "") -> str:
        now, chat_id = time.time(), new_id()
        with self._write() as connection:
            connection.execute(insert(conversations).values(
                id=chat_id, owner=owner, title=storable(title), instructions=storable(instructions), skill=skill, settings=settings or {},
                shown_leaf=None, created_at=now, updated_at=now, deleted_at=None))
        return chat_id

    def chats(self, owner: str, search: str = "", limit: int = 200) -> list[ChatSummary]:
        """The owner's chats, newest first; `search` matches titles and message text (any case)."""
        query = select(conversations.c.id, conversations.c.title, conversations.c.updated_at, conversations.c.model).where(
            conversations.c.owner == owner, conversations.c.deleted_at.is_(None))
        if search.strip():
            words = search.strip()
            in_messages = select(messages.c.id).where(
                messages.c.conversation_id == conversations.c.id, messages.c.content.icontains(words, autoescape=True)).exists()
            query = query.where(or_(conversations.c.title.icontains(words, autoescape=True), in_messages))
        query = query.order_by(conversations.c.updated_at.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [ChatSummary(*row) for row in connection.execute(query)]

    def open_chat(self, owner: str, chat_id: str) -> StoredChat:
        """The chat and the path it shows. Raises StoreError for an id that isn't the owner's."""
        with self.engine.connect() as connection:
            row = connection.execute(select(conversations).where(*self._owned(owner, chat_id))).mappings().first()
            if row is None:
                raise no_such_chat()
            rows = connection.execute(select(messages).where(messages.c.conversation_id == chat_id)
                                      .order_by(messages.c.position)).mappings().all()
        every = [stored_message(m, self.stale_after_s) for m in rows]
        return StoredChat(row["id"], row["title"], row["instructions"], row["skill"], dict(row["settings"] or {}), every,
                          row["shown_leaf"], row["model"])

    def title(self, owner: str, chat_id: str) -> str:
        """The chat's title ("" for an id that isn't the owner's)."""
        with self.engine.connect() as connection:
            return connection.execute(select(conversations.c.title).where(*self._owned(owner, chat_id))).scalar() or ""

    def rename(self, owner: str, chat_id: str, title: str) -> None:
        self._change_chat(owner, chat_id, title=storable(title.strip()[:200]))

    def save_chat_settings(self, owner: str, chat_id: str, instructions: str, skill: str | None,
                           settings: dict[str, Any]) -> None:
        self._change_chat(owner, chat_id, instructions=storable(instructions), skill=skill, settings=settings)

    def save_chat_model(self, owner: str, chat_id: str, model: str) -> None:
        self._change_chat(owner, chat_id, touch=False, model=model)

    # -- models' defaults ----------------------------------------------------------------------

    def model_defaults(self, model: str) -> ModelDefaults | None:
        with self.engine.connect() as connection:
            data = connection.execute(select(model_defaults.c.defaults).where(model_defaults.c.model == model)).scalar()
        if not isinstance(data, dict):
            return None
        return ModelDefaults(data.get("instructions"), dict(data.get("settings") or {}), tuple(data.get("stop_strings") or ()),
                             data.get("prompt_format"), data.get("skill"))

    def save_model_defaults(self, model: str, defaults: ModelDefaults) -> None:
        data = {"instructions": storable(defaults.instructions), "settings": defaults.settings,
                "stop_strings": list(defaults.stop_strings), "prompt_format": defaults.prompt_format, "skill": defaults.skill}
        with self._write() as connection:
            connection.execute(delete(model_defaults).where(model_defaults.c.model == model))
            if not defaults.empty:
                connection.execute(insert(model_defaults).values(model=model, defaults=data, updated_at=time.time()))

    def delete(self, owner: str, chat_id: str) -> None:
        """Hides the chat; `restore` brings it back (for UNDO_DELETE_S), then it is removed for good."""
        self._change_chat(owner, chat_id, deleted_at=time.time(), touch=False)
        self.purge_deleted()

    def restore(self, owner: str, chat_id: str) -> None:
        with self._write() as connection:
            connection.execute(update(conversations).where(
                conversations.c.owner == owner, conversations.c.id == chat_id).values(deleted_at=None))

    def purge_deleted(self, older_than_s: float = UNDO_DELETE_S) -> None:
        cutoff = time.time() - older_than_s
        with self._write() as connection:
            gone = select(conversations.c.id).where(conversations.c.deleted_at < cutoff)
            connection.execute(delete(token_data).where(token_data.c.conversation_id.in_(gone)))
            connection.execute(delete(messages).where(messages.c.conversation_id.in_(gone)))
            connection.execute(delete(conversations).where(conversations.c.deleted_at < cutoff))
            gone_skills = select(user_skills.c.id).where(user_skills.c.deleted_at < cutoff)
            connection.execute(delete(skill_versions).where(skill_versions.c.skill_id.in_(gone_skills)))
            connection.execute(delete(user_skills).where(user_skills.c.deleted_at < cutoff))

    # -- messages ------------------------------------------------------------------------------

    def add_message(self, owner: str, chat_id: str, message: Mapping[str, Any], parent_id: str | None,
                    status: MessageStatus = MessageStatus.COMPLETE) -> str:
        """Adds `message` after `parent_id` and shows it (the chat's path now ends there); its id (the
        message's own `id` if it has one: the session's tree gives its messages theirs)."""
        now, message_id = time.time(), message.get("id") or new_id()
        with self._write() as connection:
            chat = connection.execute(select(conversations.c.title).where(*self._owned(owner, chat_id))).first()
            if chat is None:
                raise no_such_chat()
            position = connection.execute(select(func.count()).where(messages.c.conversation_id == chat_id)).scalar_one()
            connection.execute(insert(messages).values(
                id=message_id, conversation_id=chat_id, parent_id=parent_id, position=position, role=message["role"],
                content=storable(message["content"]), typed=storable(message.get("typed")), skill=message.get("skill"),
                skill_values={name: storable(value) for name, value in message["values"].items()} if message.get("values") else None,
                attached=storable(message.get("attached")),
                status=status, error=storable(message.get("error")), provenance=message.get("provenance"),
                comparison=message.get("comparison") or null(), created_at=now, updated_at=now, shown_at=now))
            changes: dict[str, Any] = {"shown_leaf": message_id, "updated_at": now}
            if not chat.title and message["role"] == "user":
                changes["title"] = storable(_title(_shown_typed(message)))
            connection.execute(update(conversations).where(conversations.c.id == chat_id).values(**changes))
        return message_id

    def update_message(self, owner: str, chat_id: str, message_id: str, content: str, status: MessageStatus,
                       error: str | None = None, provenance: dict[str, Any] | None = None) -> None:
        """An answer's text so far (while it streams) or at its end, with its status."""
        now = time.time()
        changes: dict[str, Any] = {"content": storable(content), "status": status, "error": storable(error), "updated_at": now}
        if provenance is not None:
            changes["provenance"] = provenance
        with self._write() as connection:
            owned = select(conversations.c.id).where(*self._owned(owner, chat_id))
            done = connection.execute(update(messages).where(
                messages.c.id == message_id, messages.c.conversation_id == chat_id,
                messages.c.conversation_id.in_(owned)).values(**changes))
            if done.rowcount:
                connection.execute(update(conversations).where(conversations.c.id == chat_id).values(updated_at=now))

    def save_comparison(self, owner: str, chat_id: str, message_id: str, comparison: dict[str, Any]) -> None:
        """A compared message's comparison as it is now (its vote, the column the chat went on with)."""
        with self._write() as connection:
            owned = select(conversations.c.id).where(*self._owned(owner, chat_id))
            done = connection.execute(update(messages).where(
                messages.c.id == message_id, messages.c.conversation_id == chat_id,
                messages.c.conversation_id.in_(owned)).values(comparison=comparison))
            if not done.rowcount:
                raise no_such_chat()

    def votes(self, owner: str | None) -> list[dict[str, Any]]:
        """The comparisons of `owner`'s chats (None: everyone's, for an admin), oldest first: the leaderboard's votes
        are those with an outcome. Deleted chats' are left out. (Other messages hold SQL NULL there: `null()` when
        written, and none before schema 6.)"""
        query = (select(messages.c.comparison).join(conversations, messages.c.conversation_id == conversations.c.id)
                 .where(messages.c.comparison.is_not(None), conversations.c.deleted_at.is_(None))
                 .order_by(messages.c.created_at))
        if owner is not None:
            query = query.where(conversations.c.owner == owner)
        with self.engine.connect() as connection:
            return [row[0] for row in connection.execute(query) if isinstance(row[0], dict)]

    def show(self, owner: str, chat_id: str, path: list[str]) -> None:
        """The chat now shows the messages `path` (ids, first to last; [] for an empty chat, as after
        Clear): its last one is the shown leaf, and each is the version last shown below its parent."""
        self._change_chat(owner, chat_id, shown_leaf=path[-1] if path else None)
        if path:
            with self._write() as connection:
                connection.execute(update(messages).where(messages.c.conversation_id == chat_id, messages.c.id.in_(path))
                                   .values(shown_at=time.time()))

    def save_tokens(self, owner: str, chat_id: str, message_id: str, data: bytes) -> None:
        """An answer's token data (replacing any it had: a Continue adds to it)."""
        with self._write() as connection:
            owned = connection.execute(select(messages.c.id).where(
                messages.c.id == message_id, messages.c.conversation_id == chat_id,
                messages.c.conversation_id.in_(select(conversations.c.id).where(*self._owned(owner, chat_id))))).first()
            if owned is None:
                raise no_such_chat()
            connection.execute(delete(token_data).where(token_data.c.message_id == message_id))
            connection.execute(insert(token_data).values(message_id=message_id, conversation_id=chat_id, data=data,
                                                         created_at=time.time()))

    def tokens(self, owner: str, chat_id: str, message_id: str) -> bytes | None:
        """An answer's token data, if it was recorded (None too for a chat that isn't the owner's)."""
        with self.engine.connect() as connection:
            return connection.execute(select(token_data.c.data).where(
                token_data.c.message_id == message_id, token_data.c.conversation_id == chat_id,
                token_data.c.conversation_id.in_(select(conversations.c.id).where(*self._owned(owner, chat_id))))).scalar()

    def mark_interrupted(self, older_than_s: float | None = None) -> int:
        """Answers left "streaming" by a process that died (not written for `older_than_s`, by default the
        store's `stale_after_s`) become "interrupted" for good; how many."""
        age = self.stale_after_s if older_than_s is None else older_than_s
        with self._write() as connection:
            return connection.execute(update(messages).where(
                messages.c.status == MessageStatus.STREAMING, messages.c.updated_at < time.time() - age)
                .values(status=MessageStatus.INTERRUPTED)).rowcount

    # -- internals -----------------------------------------------------------------------------

    def _owned(self, owner: str, chat_id: str) -> tuple[Any, ...]:
        return conversations.c.id == chat_id, conversations.c.owner == owner, conversations.c.deleted_at.is_(None)

    def _change_chat(self, owner: str, chat_id: str, touch: bool = True, **changes: Any) -> None:
        if touch:
            changes["updated_at"] = time.time()
        with self._write() as connection:
            done = connection.execute(update(conversations).where(and_(*self._owned(owner, chat_id))).values(**changes))
        if not done.rowcount:
            raise no_such_chat()


def _shown_typed(message: Mapping[str, Any]) -> str:
    """What the chat shows of a user message: what was typed, less an attached file (named instead)."""
    typed = message.get("typed") or message["content"]
    if not message.get("attached"):
        return typed
    said, _ = split_attachment(typed, message["attached"])
    return f"{said} 📎 {message['attached']}" if said.strip() else f"📎 {message['attached']}"


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"
