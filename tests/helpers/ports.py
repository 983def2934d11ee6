"""Ports on 127.0.0.1 for tests (tests never listen on other addresses)."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from typing import Iterator

HOST = "127.0.0.1"
# Each pytest-xdist worker hands out ports from a range of its own, below the kernel's ephemeral ports
# (32768 and up on Linux): a port one worker picked and has not bound yet can't be another's pick too,
# nor a port the kernel gives a client connection meanwhile.
FIRST_PORT, PORTS_PER_WORKER = 20000, 1000


def _worker_number() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, … (none: one process, as gw0)
    return int(worker.removeprefix("gw") or 0) % 12


_next_ports = itertools.cycle(range(FIRST_PORT + _worker_number() * PORTS_PER_WORKER,
                                    FIRST_PORT + (_worker_number() + 1) * PORTS_PER_WORKER))


def free_port() -> int:
    """A port nothing listens on now (a connection to it is refused); a server may then take it."""
    for port in _next_ports:
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue  # in use (another program, or a server of this run that kept it)
            return port
    raise AssertionError("unreachable: the cycle never ends")


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]
