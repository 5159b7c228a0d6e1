"""Let glibc's malloc keep freed memory for the next training step (Linux; a no-op elsewhere).

A CPU training step allocates the same large buffers every step and frees them at its end:
torch's activations and gradients (the [B*P, V] MLM logits alone are 78 MB at mini, B=32, with
BERT's vocabulary), XLA's one temporary buffer per executed program (hundreds of MB). glibc
serves every request above its mmap threshold (at most 32 MiB, by default) with a fresh `mmap`
and gives it back with `munmap` when freed, so each step faults every page of it in again, one
4 KiB page at a time, in the kernel, every step. The settings below remove nearly all of those
faults and make both twins' CPU steps faster (BENCHMARKS.md, "Linux: malloc's page faults", has
the figures and commands).

The settings (`mallopt`, glibc's documented knobs; `man mallopt`):
- M_MMAP_THRESHOLD = 1 GiB: requests up to 1 GiB come from malloc's heap, which keeps and reuses
  them, instead of from fresh `mmap`s;
- M_TRIM_THRESHOLD = 2 GiB - 1: the heap's free top is not handed back to the kernel after each
  step, only to be faulted in again;
- M_ARENA_MAX = 1: one heap for every thread. A thread other than the main one gets its own
  arena, made of 64 MiB sub-heaps that cannot hold a larger buffer, which is then `mmap`ed
  whatever the threshold: jaxbert keeps its page faults with the two settings above alone and
  loses them with this one (XLA allocates from its worker threads). It applies to threads
  that have not allocated yet, so the twins call this first thing, before the framework starts.

The cost: memory once used is kept for reuse, so peak RSS is the heap's high-water mark
(for jaxbert it varies from run to run with how the one heap fragments; BENCHMARKS.md).
`TWINBERT_MALLOC=system` (or a GLIBC_TUNABLES that sets any malloc tunable) leaves malloc as it was.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8     # glibc's <malloc.h>
SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))


def keep_freed_memory() -> bool:
    """Apply SETTINGS where malloc is glibc's and the user has not chosen otherwise.
    Returns whether all of them took effect."""
    if os.environ.get("TWINBERT_MALLOC", "") == "system" or \
            "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in SETTINGS])
