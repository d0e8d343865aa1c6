"""The live daemon's dealings with the C allocator, so its resident memory settles.

glibc gives threads that contend for the heap arenas of their own, up to eight per core.
The daemon's scraping pool runs dozens of threads that each parse a body, hand the
samples over and free them; every arena keeps its own free lists and high-water mark, so
resident memory creeps up for hours as each arena in turn meets its largest body (the
load benchmark measured it: objects alive stay flat at about a megabyte while resident
memory grows). Two arenas hold the daemon's whole working set with room to spare: the
interpreter lock already serializes most allocation, so little contention is given up.

After each evaluation, freed heap pages are handed back: an evaluation allocates arrays
as large as its releases' windows and frees them, and without a trim resident memory
would ratchet up with the largest window ever judged.

An operator's own MALLOC_ARENA_MAX wins; other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

DAEMON_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's <malloc.h>

log = logging.getLogger(__name__)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library, when it is glibc (the one with these knobs)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


def cap_malloc_arenas(count: int = DAEMON_ARENAS) -> bool:
    """Ask glibc for at most `count` arenas from now on; True if it agreed.

    Arenas already made stay; call it before the pools start their threads.
    """
    if count < 1:
        raise ValueError(f"arena count must be at least 1, not {count}")
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    agreed = bool(libc.mallopt(_M_ARENA_MAX, count))
    if agreed:
        log.debug("malloc arenas capped at %d", count)
    return agreed


def return_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc only; elsewhere nothing)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
