"""Ports on 127.0.0.1 for tests (tests never listen on other addresses)."""

from __future__ import annotations

import contextlib
import socket
from typing import Iterator

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (a connection to it is refused); a server may then take it."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]
