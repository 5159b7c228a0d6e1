"""ModernBERT's position and attention-pattern tables, framework-free (numpy), shared by both twins.

Both twins take these arrays as constants (sequence lengths are static shapes in both), so the
rotary angles and the local window are the same numbers in torch and JAX by construction, and the
framework code is only the arithmetic that uses them.

- `rope_cos_sin`: rotary position embeddings (Su et al. 2021, RoFormer), as transformers'
  `ModernBertRotaryEmbedding` with rope_type "default": feature pair (i, i + D/2) of a query or
  key at position p is rotated by the angle p * theta^(-2i/D). The angles are formed in float32
  as transformers forms them (float32 inverse frequencies times float32 positions), then cos and
  sin are taken in float64 and rounded once, so they match transformers to float32 rounding.
- `window_mask`: ModernBERT's local attention: query i sees key j iff |i - j| <= local_attention
  // 2 (transformers' `sliding_window_bidirectional_overlay` with sliding_window =
  local_attention // 2).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=32)
def rope_cos_sin(theta: float, head_dim: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each float32 [length, head_dim]: the second half of the features repeats the
    first half's angles (transformers' `cat((freqs, freqs))`, used with `rotate_half`)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = np.float32(1.0) / (np.float32(theta) ** exponents)               # (D/2,) f32
    angles = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]    # (L, D/2) f32
    angles = np.concatenate([angles, angles], axis=-1).astype(np.float64)        # (L, D)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


@functools.lru_cache(maxsize=32)
def window_mask(length: int, local_attention: int) -> np.ndarray:
    """bool [length, length]: True where query i may attend to key j in a local layer."""
    pos = np.arange(length)
    mask = np.abs(pos[:, None] - pos[None, :]) <= local_attention // 2
    mask.setflags(write=False)
    return mask
