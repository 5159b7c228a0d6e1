"""bertcore.infra.malloc: freed memory is reused (no page faults), and the user can opt out."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import pytest

from bertcore.infra import malloc
from helpers import ROOT, program

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's; elsewhere keep_freed_memory is a no-op")


def child(**env) -> dict:
    """A child process allocates, fills and frees a 200 MB array five times (a training step's
    pattern), then reports its minor page faults for the last four rounds. numpy's own
    transparent-huge-page advice is off there (NUMPY_MADVISE_HUGEPAGE=0): torch and XLA give
    none, and with it a round faults 2 MiB pages, 100 of them, which would hide what is
    measured."""
    out = subprocess.run(program("malloc_faults"), capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "NUMPY_MADVISE_HUGEPAGE": "0",
                              **env})
    return json.loads(out.stdout)


@glibc
def test_freed_memory_is_reused_without_page_faults():
    pages = 25_000_000 * 8 // 4096                     # 48,828 pages of 4 KiB a round
    kept = child(TWINBERT_MALLOC="", GLIBC_TUNABLES="")
    system = child(TWINBERT_MALLOC="system", GLIBC_TUNABLES="")
    assert kept["applied"] and not system["applied"]
    assert system["faults"] > 3 * pages                 # every round faults its pages in again
    assert kept["faults"] < pages / 10                  # the heap hands the same pages back


@glibc
def test_a_users_own_malloc_tunables_are_left_alone():
    assert not child(TWINBERT_MALLOC="", GLIBC_TUNABLES="glibc.malloc.hugetlb=1")["applied"]


def test_no_op_where_malloc_is_not_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.delenv("TWINBERT_MALLOC", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert malloc.keep_freed_memory() is False
