"""What this machine has free, and handing memory back: for the model list's checks before and after a load.

Linux figures (/proc); elsewhere the functions say None and the checks are skipped. torch is never imported
here: GPU figures are read only where a model already imported it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from pathlib import Path


def available_ram() -> int | None:
    """Bytes the kernel says can be given to programs without swapping (MemAvailable); None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def process_rss() -> int | None:
    """This process's resident memory in bytes; None off Linux."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def gpu_free() -> dict[str, tuple[int, int]]:
    """Each GPU's (free, total) bytes; empty without one (torch is imported only if it already is)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": torch.cuda.mem_get_info(i) for i in range(torch.cuda.device_count())}


def give_back_freed_memory() -> None:
    """After a model is dropped: collect its objects and hand freed heap pages back to the system (glibc
    keeps small freed blocks for reuse, and the process's memory would not drop)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


