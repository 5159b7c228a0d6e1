import os
import sys
from pathlib import Path

# One compute thread per test process (torch/OpenMP, MKL), set before torch is imported and
# inherited by the CLI subprocesses: `pytest -n 2` on 2 cores would otherwise run 4 spinning
# OpenMP threads on 2 cores, which slows torch down several-fold (measured: 2.6 s vs 0.4 s per
# step for tiny at B=32, L=64 while another process held a core).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import helpers.py


def pytest_collection_modifyitems(items):
    """Slow tests first, the rest in their usual order: with `pytest -n 2` and xdist's worksteal
    (pyproject.toml) the minutes-long tests start at once and the short ones fill the gaps,
    instead of one worker ending the session alone on a long test that came late. (With xdist's
    default `load`, whose first batches are long runs of consecutive tests, this order would put
    most slow tests on one worker: measured 20:43 against 16:14 with worksteal.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(params=["torch", "jax"])
def twin(request) -> str:
    """A test that takes `twin` runs once per twin: `test_x[torch]`, `test_x[jax]`."""
    return request.param


@pytest.fixture(scope="session")
def jax_compilation_cache(tmp_path_factory) -> str:
    """One persistent XLA cache for every jaxbert subprocess of the session: each distinct
    program compiles once, the next process with the same shapes loads it."""
    return str(tmp_path_factory.getbasetemp().parent / "jax-compilation-cache")


@pytest.fixture
def cache_env(tmp_path, jax_compilation_cache) -> dict[str, str]:
    """Environment for a training subprocess: its own data cache, the session's XLA cache."""
    return {"TWINBERT_CACHE": str(tmp_path / "cache"),
            "JAX_COMPILATION_CACHE_DIR": jax_compilation_cache}


@pytest.fixture
def cache_in_env(cache_env, monkeypatch) -> None:
    """In-process runs use the test's data cache and the session's XLA cache."""
    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> str:
    """One data cache (TWINBERT_CACHE) for tests that train on the same corpus with the same
    settings, shared by pytest-xdist's workers: the first run builds the tokenizer and shards,
    the others wait for it (bertcore.train.run's cache lock) and reuse them."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent   # this session's folder, above each worker's own
    return str(root / "shared-twinbert-cache")
