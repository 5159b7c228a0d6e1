"""How ELECTRA's generator samples its replacement tokens, framework-free: the rule both twins
compute in their own framework (torchbert/electra.py, jaxbert/electra.py), and a numpy
reference the tests hold them to.

The paper's generator samples each masked slot's replacement from its softmax, with no gradient
through the sample; google-research/electra does it by the Gumbel-max trick,
argmax(logits + g) with g = -log(-log(u)), u uniform per (slot, vocabulary entry). For the twins
to draw the *same* token from the same logits, u must be the same numbers in both, and the draw
must not hinge on float rounding that differs between frameworks. So:

- bertcore draws one 31-bit seed per masked slot with the batch (`sample_seeds`, seeded by
  (seed, step) like the masks), and each twin turns (slot seed, vocabulary index) into u with the
  same 32-bit integer hash (`hash32` below: multiply, xor, shift; exact in any framework, on
  uint32 in JAX and on int32 holding the same bits in torch), u = (top 23 bits + 0.5) / 2^23, which
  fp32 holds exactly.
- Inverse-CDF sampling (one uniform per slot against a cumulative sum of the softmax) would need
  less noise, but a cumulative sum over ~30,000 entries rounds differently in torch and XLA, and
  every boundary it moves can move the sample: in a test, about one token in a few thousand. With
  Gumbel-max, the twins can only disagree when the two best perturbed scores are within float
  rounding (~1e-6) of each other, which happens for about one sample in a million.
"""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
# Odd multipliers below 2^31: they fit a signed int32 (torch multiplies int32 holding the uint32
# bits, wrapping modulo 2^32 as JAX's uint32 does), and a 32-bit value times one fits the int64
# this numpy reference computes in exactly.
MUL_A = 0x7FEB352D
MUL_B = 0x68E31DA5
UNIFORM_BITS = 23          # u = (h >> 9 + 0.5) / 2^23: exact in fp32, never 0 or 1


def hash32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer mix (xor-shift-multiply, as in murmur3's finaliser) on int64 arrays whose
    values are below 2^32; the twins' `_hash32` compute the same bits."""
    x = x ^ (x >> 16)
    x = (x * MUL_A) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL_B) & MASK32
    return x ^ (x >> 16)


def uniforms(seeds: np.ndarray, vocab_size: int) -> np.ndarray:
    """u[..., v] in (0, 1), fp32, for each slot seed (any shape) and vocabulary entry v."""
    h = hash32(np.asarray(seeds, np.int64) & MASK32)[..., None]                  # (..., 1)
    v = (np.arange(vocab_size, dtype=np.int64) * MUL_B) & MASK32                  # (V,)
    h = hash32(h ^ v)                                                             # (..., V)
    return (((h >> (32 - UNIFORM_BITS)).astype(np.float32) + np.float32(0.5))
            * np.float32(2.0 ** -UNIFORM_BITS))


def gumbel_noise(seeds: np.ndarray, vocab_size: int) -> np.ndarray:
    """g = -log(-log(u)) of `uniforms`, fp32."""
    u = uniforms(seeds, vocab_size)
    return -np.log(-np.log(u))


def sample(logits: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """argmax(logits + g): the token each slot draws from softmax(logits) (numpy reference)."""
    logits = np.asarray(logits, np.float32)
    return np.argmax(logits + gumbel_noise(seeds, logits.shape[-1]), axis=-1).astype(np.int32)
