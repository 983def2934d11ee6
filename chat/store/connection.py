"""How the store talks to its database: the write lock SQLite needs, and a driver's error in one line."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, NoSuchModuleError


class WriteLock:
    """`with store._write() as connection:` a transaction, holding the process's SQLite write lock."""

    def __init__(self, lock: threading.Lock | None, engine: Engine):
        self.lock, self.engine = lock, engine

    def __enter__(self):
        if self.lock is not None:
            self.lock.acquire()
        try:
            self.transaction = self.engine.begin()
            return self.transaction.__enter__()
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self.transaction.__exit__(*exc)
        finally:
            if self.lock is not None:
                self.lock.release()


def reason(error: BaseException) -> str:
    """The driver's own words, on one line, without the SQL or a URL (which could hold a password)."""
    original = getattr(error, "orig", None) if isinstance(error, DBAPIError) else None
    text = " ".join(str(original or error).split())
    text = text.split(" [SQL:")[0].split("(Background on this error")[0].strip()
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return "it is read-only (check the file's and its folder's permissions)"
    if "database is locked" in lowered:
        return "it is locked by another program (close it, or use another --db)"
    if "not a database" in lowered:
        return "the file is not a SQLite database"
    if "unable to open" in lowered:
        return "unable to open the file (does its folder exist, and may this user write there?)"
    if "password authentication failed" in lowered:
        return "the server refused the user name or password"
    if "connection refused" in lowered:
        return "connection refused (is the database server running, at that host and port?)"
    if isinstance(error, NoSuchModuleError):
        return f"this app has no driver for that kind of database ({text})"
    return text[:300]
