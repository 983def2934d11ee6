"""Conversations that last: the store (SQLite or PostgreSQL) and its schema."""
