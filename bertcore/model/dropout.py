"""The dropout rule both twins draw with on a CPU: 16 random bits per element, not a float.

Dropout zeroes each element with probability p and scales the others by 1 / (1 - p). The stock
layers (`torch.nn.Dropout`, `flax.linen.Dropout`) draw a float32 uniform per element: 32 random
bits, a conversion and a compare. On a CPU that is a large share of a BERT training step, the
attention probabilities' dropout most of all (BENCHMARKS.md has the figures). Both twins instead
take 16 bits per element from the framework's own generator (two per 32-bit word) and keep an
element iff those bits, read as an unsigned integer, are >= `t = round(p * 65536)`. So:

- p is rounded to a multiple of 1/65536 (0.1 becomes 6554/65536 = 0.1000061);
- the kept elements are scaled by 65536 / (65536 - t), so the expected output is the input
  exactly, as with the stock layers;
- the masks are still each framework's own draws (torch: its seeded CPU generator; jax: the
  `dropout` key), so the twins' masks differ, as the stock layers' do (parity compares dropout-on
  curves statistically: parity/thresholds.py).

torchbert keeps `F.dropout` on CUDA, where it is one fused Philox kernel. Measured costs are in
docs/twins.md ("Dropout's random bits").
"""

from __future__ import annotations

BITS = 16
LEVELS = 1 << BITS      # 65536


def dropout_threshold(rate: float) -> tuple[int, float]:
    """(t, scale) for dropout `rate` in [0, 1): keep an element iff its 16 random bits (unsigned)
    are >= t, and multiply the kept ones by `scale`. t = 0 (rate < 1/131072) keeps everything."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate {rate} must be in [0, 1)")
    t = min(round(rate * LEVELS), LEVELS - 1)
    return t, LEVELS / (LEVELS - t)
