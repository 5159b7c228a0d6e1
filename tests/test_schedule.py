import math

import numpy as np
import pytest

from bertcore.model.config import TrainConfig
from bertcore.train.schedule import make_schedule


def test_linear_warmup_and_decay():
    lr = make_schedule(TrainConfig(lr=1e-3, warmup_steps=10, steps=110, schedule="linear"), 256)
    assert float(lr(0)) == pytest.approx(1e-4)
    assert float(lr(9)) == pytest.approx(1e-3)
    assert float(lr(10)) == pytest.approx(1e-3)
    assert float(lr(60)) == pytest.approx(5e-4)
    assert float(lr(110)) == 0.0
    assert float(lr(500)) == 0.0


def test_cosine():
    lr = make_schedule(TrainConfig(lr=2.0, warmup_steps=4, steps=104, schedule="cosine"), 256)
    assert float(lr(1)) == pytest.approx(1.0)
    assert float(lr(4)) == pytest.approx(2.0)
    assert float(lr(54)) == pytest.approx(1.0, abs=1e-6)
    assert float(lr(104)) == pytest.approx(0.0, abs=1e-7)


def test_noam_matches_attention_is_all_you_need():
    d, w = 256, 100
    lr = make_schedule(TrainConfig(lr=1.0, warmup_steps=w, steps=1000, schedule="noam"), d)
    for step in (0, 50, 99, 100, 500):
        s = step + 1
        assert float(lr(step)) == pytest.approx(d ** -0.5 * min(s ** -0.5, s * w ** -1.5), rel=1e-6)
    # peaks at the end of warmup
    assert float(lr(w - 1)) > float(lr(w + 50))


@pytest.mark.parametrize("name", ["linear", "cosine", "noam", "constant"])
def test_vectorised_over_steps(name):
    """The same function evaluates arrays of steps (what jax.numpy sees under jit)."""
    lr = make_schedule(TrainConfig(lr=1e-3, warmup_steps=5, steps=50, schedule=name), 128)
    steps = np.arange(60)
    arr = lr(steps, xp=np)
    assert np.allclose(arr, [float(lr(int(s))) for s in steps])
    assert all(math.isfinite(x) and x >= 0 for x in arr)
