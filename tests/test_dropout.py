"""Both twins' Dropout (bertcore/model/dropout.py's rule: 16 random bits an element, kept iff >= t).

Statistical checks use bars of 5 standard errors of a binomial proportion, so a correct
implementation fails about once in 3.5 million runs; every draw is seeded, so a run repeats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bertcore.model.config import BertConfig
from bertcore.model.dropout import LEVELS, dropout_threshold
from jaxbert.classifier import BertForSequenceClassification as JaxClassifier
from jaxbert.model import Dropout as JaxDropout
from torchbert.classifier import BertForSequenceClassification as TorchClassifier
from torchbert.model import Dropout as TorchDropout

SHAPE = (999, 1001)     # an odd count: the last 64-bit (torch) / 32-bit (jax) word is cut short


def test_threshold_keeps_the_expectation_exact():
    assert dropout_threshold(0.1) == (6554, LEVELS / (LEVELS - 6554))
    assert dropout_threshold(0.0) == (0, 1.0)
    for rate in (0.05, 0.1, 0.25, 0.5, 0.9, 0.99999):
        t, scale = dropout_threshold(rate)
        assert abs(t / LEVELS - rate) <= 0.5 / LEVELS
        assert abs((LEVELS - t) / LEVELS * scale - 1.0) < 1e-12   # E[output] = input
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            dropout_threshold(bad)


def torch_dropout(rate, x, seed):
    torch.manual_seed(seed)
    return TorchDropout(rate).train()(torch.as_tensor(x)).numpy()


def jax_dropout(rate, x, seed):
    return np.asarray(JaxDropout(rate).apply({}, jnp.asarray(x), deterministic=False,
                                             rngs={"dropout": jax.random.PRNGKey(seed)}))


TWINS = {"torch": torch_dropout, "jax": jax_dropout}


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_twin_dropout_draws_the_rule(twin, rate):
    t, scale = dropout_threshold(rate)
    x = np.ones(SHAPE, np.float32)
    y = TWINS[twin](rate, x, seed=0)
    dropped = (y == 0).ravel()
    assert set(np.unique(y)) == {0.0, np.float32(scale)}     # kept ones scaled, exactly
    p, n = t / LEVELS, dropped.size

    def near(frac, count, expected):
        return abs(frac - expected) <= 5 * np.sqrt(expected * (1 - expected) / count)

    assert near(dropped.mean(), n, p)
    # Every position within a generator word drops at the rate (a bit the generator leaves
    # constant, e.g. a sign bit, would pin one of them), and neighbours independently.
    for k in range(4):
        assert near(dropped[k::4].mean(), dropped[k::4].size, p), k
    pairs = dropped[0:-1:2] & dropped[1::2]
    assert near(pairs.mean(), pairs.size, p * p)
    # The same seed draws the same mask; another seed another.
    assert np.array_equal(TWINS[twin](rate, x, seed=0), y)
    assert (TWINS[twin](rate, x, seed=1) != y).mean() > p / 2


def test_twin_dropout_off_is_identity_and_keeps_dtype():
    x = np.random.default_rng(0).standard_normal((7, 13)).astype(np.float32)
    assert np.array_equal(TorchDropout(0.1).eval()(torch.as_tensor(x)).numpy(), x)
    assert np.array_equal(TorchDropout(0.0).train()(torch.as_tensor(x)).numpy(), x)
    assert np.array_equal(np.asarray(JaxDropout(0.1).apply({}, jnp.asarray(x))), x)
    assert np.array_equal(np.asarray(JaxDropout(0.0).apply(
        {}, jnp.asarray(x), deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})), x)
    torch.manual_seed(0)
    assert TorchDropout(0.1).train()(torch.ones(7, 13, dtype=torch.bfloat16)).dtype == \
        torch.bfloat16
    assert JaxDropout(0.1).apply({}, jnp.ones((7, 13), jnp.bfloat16), deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(0)}).dtype == jnp.bfloat16


def test_twin_dropout_gradient_is_the_mask():
    # d(sum(w * dropout(x)))/dx = w * mask * scale, the same mask as the forward's.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((33, 65)).astype(np.float32)
    w = rng.standard_normal((33, 65)).astype(np.float32)
    t, scale = dropout_threshold(0.3)

    torch.manual_seed(3)
    xt = torch.tensor(x, requires_grad=True)
    yt = TorchDropout(0.3).train()(xt)
    (yt * torch.as_tensor(w)).sum().backward()
    mask_t = (yt.detach().numpy() != 0) * np.float32(scale)
    np.testing.assert_allclose(xt.grad.numpy(), w * mask_t, rtol=1e-6)

    key = {"dropout": jax.random.PRNGKey(3)}
    f = lambda x: JaxDropout(0.3).apply({}, x, deterministic=False, rngs=key)
    y, grad = f(jnp.asarray(x)), jax.grad(lambda x: (f(x) * w).sum())(jnp.asarray(x))
    mask_j = (np.asarray(y) != 0) * np.float32(scale)
    np.testing.assert_allclose(np.asarray(grad), w * mask_j, rtol=1e-6)


def test_classifier_head_drops_with_the_rule():
    # The head's dropout on the pooled [CLS] vector is the encoder's Dropout in both twins.
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.2)
    torch_head = TorchClassifier(cfg, num_labels=2)
    assert isinstance(torch_head.dropout, TorchDropout) and torch_head.dropout.p == 0.2
    assert not [m for m in torch_head.modules() if isinstance(m, torch.nn.Dropout)]
    jax_head = JaxClassifier(cfg, num_labels=2).bind({})    # runs setup, makes no params
    assert isinstance(jax_head.dropout, JaxDropout) and jax_head.dropout.rate == 0.2
