"""The live daemon's cap on glibc's malloc arenas, counted by glibc itself (malloc_info)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from monitor.allocator import cap_malloc_arenas

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# Starts 16 threads that each allocate and free blocks malloc serves from an arena (larger
# than Python's small-object allocator takes), all alive at once, then prints how many
# heaps glibc's own report lists.
_COUNT_ARENAS = textwrap.dedent("""
    import ctypes, ctypes.util, sys, tempfile, threading
    from monitor.allocator import cap_malloc_arenas
    if sys.argv[1] == "cap":
        print("agreed" if cap_malloc_arenas(2) else "refused")
    barrier = threading.Barrier(16)
    def work():
        blocks = [bytearray(4096 + k) for k in range(200)]
        barrier.wait()
        del blocks
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    with tempfile.NamedTemporaryFile(suffix=".xml") as report:
        stream = libc.fopen(report.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        print("heaps", open(report.name).read().count("<heap nr="))
""")


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", _COUNT_ARENAS, mode], capture_output=True,
                         text=True, check=True, env=environment, timeout=60).stdout.split("\n")
    heaps = int(next(line for line in out if line.startswith("heaps")).split()[1])
    return out[0], heaps


@glibc
def test_capped_threads_share_two_arenas_where_uncapped_ones_take_more() -> None:
    answer, capped = _arenas("cap")
    _, uncapped = _arenas("plain")
    assert answer == "agreed"
    assert capped <= 2
    # The same work without the cap spreads over more arenas: the count above is the cap's.
    assert uncapped > 2


@glibc
def test_an_operators_malloc_arena_max_wins() -> None:
    answer, heaps = _arenas("cap", MALLOC_ARENA_MAX="3")
    assert answer == "refused"
    assert heaps == 3


def test_a_cap_below_one_arena_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cap_malloc_arenas(0)


# 200 MB in blocks small enough for the heap (not mmap), all freed but the last, which pins
# the heap's top so that only a trim can give the pages below it back.
_FREE_AND_MEASURE = textwrap.dedent("""
    import sys
    from monitor.allocator import return_free_memory
    def resident_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    blocks = [bytearray(1000) for _ in range(200_000)]
    last = blocks[-1]
    del blocks
    before = resident_mb()
    if sys.argv[1] == "trim":
        return_free_memory()
    print(before, resident_mb())
""")


def _resident_around(mode: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _FREE_AND_MEASURE, mode], capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    return float(out[0]), float(out[1])


@glibc
def test_freed_heap_pages_go_back_to_the_system() -> None:
    before, after = _resident_around("trim")
    kept_before, kept_after = _resident_around("plain")
    assert before > 150 and after < before - 150
    # Without the trim the same pages stay resident: the drop above is the trim's.
    assert kept_after > kept_before - 20
