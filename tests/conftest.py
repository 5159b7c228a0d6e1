import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import helpers.py and friends


@pytest.fixture(scope="session")
def jax_compilation_cache(tmp_path_factory) -> str:
    """One persistent XLA cache for every jaxbert subprocess of the session: each distinct
    program compiles once, the next process with the same shapes loads it."""
    return str(tmp_path_factory.getbasetemp().parent / "jax-compilation-cache")
