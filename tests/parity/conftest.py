"""Fixtures for the parity suite: in-process where possible (one import of torch, jax and
transformers; every XLA program compiled once per session and cached on disk)."""

from __future__ import annotations

import os

import jax
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _highest_matmul_precision():
    """Full fp32 matmuls in XLA for every comparison here (parity/check.py explains why); per
    module and undone afterwards, so other test modules in the same worker keep jax's default."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module", autouse=True)
def _parity_env(jax_compilation_cache, tmp_path_factory):
    """Persistent XLA cache for in-process jax and for subprocesses; one torch thread (on a busy
    2-core machine, spinning OpenMP threads of two processes slow each other down tenfold);
    a private twinbert cache for tokenizers and shards. Per module, and undone afterwards, so
    tests outside tests/parity run in the process state they expect."""
    saved_env = {k: os.environ.get(k) for k in ("JAX_COMPILATION_CACHE_DIR", "TWINBERT_CACHE")}
    os.environ["JAX_COMPILATION_CACHE_DIR"] = jax_compilation_cache
    os.environ["TWINBERT_CACHE"] = str(tmp_path_factory.mktemp("twinbert-cache"))
    jax.config.update("jax_compilation_cache_dir", jax_compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
