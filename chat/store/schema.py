"""The conversation store's tables, and how a database made by an earlier release is brought up to date.

One model serves the store, the versions tree and the token view (docs/data-model.md describes it):
a conversation is a tree of messages, each pointing at its parent; the page shows the path from
the first message to `shown_leaf`. Alternatives (Retry, edits) are siblings; nothing is deleted
to make one. Answers carry their provenance as a versioned JSON document. Later features add
tables or columns with a migration step here, never a change of meaning.

Times are seconds since the epoch (floats): the same on SQLite and PostgreSQL, and sortable.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import JSON, Column, Connection, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text, text

SCHEMA_VERSION = 6  # this release's; a database with a larger one was made by a newer release
ID_LENGTH = 32  # ids are 22-character URL-safe random tokens (128 bits): unguessable

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

conversations = Table(
    "conversations", metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("owner", String(255), nullable=False),  # a --auth user name, or a browser's own id
    Column("title", String(200), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("skill", String(200)),
    Column("settings", JSON),  # the GenerationSettings fields it uses now
    Column("shown_leaf", String(ID_LENGTH)),  # the message the shown path ends at (None: empty chat)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float),  # deleted chats are kept a while, so that Undo can bring them back
    Column("model", String(400)),  # schema 4: the model the chat answers with (None: the app's default)
    Index("ix_conversations_owner_updated", "owner", "updated_at"),
)

messages = Table(
    "messages", metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("conversation_id", String(ID_LENGTH), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("parent_id", String(ID_LENGTH)),  # the message it follows (None: the first); siblings are versions
    Column("position", Integer, nullable=False),  # order of creation within the conversation
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),  # what the model saw (a user message after its skill's template)
    Column("typed", Text),  # what the user typed, where a skill expanded it
    Column("skill", String(200)),
    Column("status", String(16), nullable=False),  # see MessageStatus
    Column("error", Text),  # shown with a failed answer
    Column("provenance", JSON),  # answers: how they were made (versioned document)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Schema 2: when it was last on the shown path. Below each message, the version shown last is the
    # one shown again when the user steps back to that branch (None: never shown since it was made).
    Column("shown_at", Float),
    Column("skill_values", JSON),  # schema 5: the values of its skill's variables (None: it has none)
    Column("attached", String(400)),  # schema 5: the name of the file attached to it (its text is in `typed`)
    # Schema 6: a message answered side by side: its columns (its answers' ids, what each contender is) and the vote
    # (chat.compare.Comparison.to_json). The leaderboard reads the votes from here.
    Column("comparison", JSON),
    Index("ix_messages_conversation_position", "conversation_id", "position"),
)

# Schema 3: an answer's token data (chat/answer_tokens.py), when it was recorded: larger than its text, so a
# table of its own, read only when the token view opens (never with the chat).
token_data = Table(
    "token_data", metadata,
    Column("message_id", String(ID_LENGTH), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("conversation_id", String(ID_LENGTH), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("data", LargeBinary, nullable=False),  # TokenLog.to_bytes(): compressed, versioned JSON
    Column("created_at", Float, nullable=False),
)


# Schema 4: each model's defaults (instructions, settings, stop strings, prompt format), as set on the page:
# the app's, not one user's (the model is shared by every chat).
model_defaults = Table(
    "model_defaults", metadata,
    Column("model", String(400), primary_key=True),
    Column("defaults", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)


# Schema 5: users' own skills (written on the page), each saved version kept. Owned like chats: every query names
# the owner. A skill's versions are never changed: bringing an old one back saves it as the newest.
user_skills = Table(
    "user_skills", metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),  # its newest version, the one in use
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float),  # deleted skills are kept a while, so that Undo can bring them back
    Index("ix_user_skills_owner", "owner"),
)

skill_versions = Table(
    "skill_versions", metadata,
    Column("skill_id", String(ID_LENGTH), ForeignKey("user_skills.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", JSON, nullable=False),  # the skill in the skills file's form (chat.skills.Skill.to_data)
    Column("note", Text, nullable=False),  # what the user said of this version ("" for none)
    Column("created_at", Float, nullable=False),
)


def _add_shown_at(connection: Connection) -> None:
    """1 → 2: versions remember which branch was shown last (release 1's rows: their creation time)."""
    connection.execute(text("ALTER TABLE messages ADD COLUMN shown_at FLOAT"))
    connection.execute(text("UPDATE messages SET shown_at = created_at"))


def _add_token_data(connection: Connection) -> None:
    """2 → 3: answers may keep their token data (none was recorded before)."""
    token_data.create(connection)


def _add_models(connection: Connection) -> None:
    """3 → 4: a chat names its model (earlier chats: the app's default), and models keep their defaults."""
    connection.execute(text("ALTER TABLE conversations ADD COLUMN model VARCHAR(400)"))
    model_defaults.create(connection)


def _add_skills(connection: Connection) -> None:
    """4 → 5: messages keep their skill's variables' values and an attached file's name (none before), and users
    their own skills."""
    json_type = JSON().compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE messages ADD COLUMN skill_values {json_type}"))
    connection.execute(text("ALTER TABLE messages ADD COLUMN attached VARCHAR(400)"))
    user_skills.create(connection)
    skill_versions.create(connection)


def _add_comparisons(connection: Connection) -> None:
    """5 → 6: a message may keep a comparison of its answers and its vote (none before)."""
    json_type = JSON().compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE messages ADD COLUMN comparison {json_type}"))


# Steps that bring a database from version N to N + 1, run in order inside one transaction.
# A step adds tables or columns; it never changes meaning.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_shown_at, 2: _add_token_data, 3: _add_models, 4: _add_skills, 5: _add_comparisons}
