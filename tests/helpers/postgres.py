"""A throw-away PostgreSQL server (Debian's `postgresql` package) in a temporary folder.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
(`runuser -u postgres -- initdb/pg_ctl`); as anyone else it runs as that user. It listens on
127.0.0.1 at a free port with password authentication, like a real deployment.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.ports import free_port

USER, PASSWORD, DATABASE = "chat", "s3cret-pg-password", "chats"
REQUIRED_ENV = "REQUIRE_POSTGRES"  # scripts/test installs PostgreSQL: there a missing one is a failure


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Starts a cluster in a fresh folder; yields its URL (postgresql+psycopg://…); stops and removes it.

    (Its own folder right under the temp dir: the `postgres` user must be able to reach it, and
    pytest's tmp_path lies below a folder only root may enter.)"""
    binaries = _binaries()
    if binaries is None:
        if os.environ.get(REQUIRED_ENV):
            pytest.fail("PostgreSQL is required here but pg_ctl is missing: scripts/test installs it (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="chat-postgres-"))
    folder.chmod(0o711)
    data, port = folder / "data", free_port()
    password_file = folder / "password"
    password_file.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(folder, "postgres")
        shutil.chown(password_file, "postgres")
    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    run(str(binaries / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(password_file), "-A", "scram-sha-256",
        "--no-sync", "-E", "UTF8", "--locale", "C")
    run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        _create_database(port)
        yield f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _create_database(port: int) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {DATABASE}")
