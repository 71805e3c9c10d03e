"""Give heap memory the process has freed back to the operating system.

glibc keeps freed blocks of a process's heap for reuse: after the server drops the synthetic pool
and the generation and warm-start buffers, its resident size stays at that peak although Python and
torch hold far less. `malloc_trim(0)` returns the free pages (glibc's own call; a few milliseconds).
"""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # musl and other C libraries have no malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> bool:
    """Return freed heap pages to the operating system; True if any were released (False off glibc)."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
