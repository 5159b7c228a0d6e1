"""Process-wide settings for XLA's CPU backend, applied by jaxbert's CLIs and benchmark workers.

Both are about speed only: the numbers a run computes are the same with or without them. Each is
measured in BENCHMARKS.md. (The torch twin has nothing like them: its CPU matmuls are MKL's and
its dropout bits come from one 64-bit draw per four elements; the malloc settings both twins
share live in bertcore/malloc.py.)
"""

from __future__ import annotations

import os

# jaxlib 0.10's CPU backend runs each standalone dot as a YNNPACK fusion; this flag runs them on
# Eigen, XLA's older CPU dot library, which makes the mini step faster on this project's CPU
# (BENCHMARKS.md, "What closed it"). Why Eigen is faster here is not established. It is an
# "experimental" flag, and XLA aborts on a flag it does not know, hence only on jaxlib 0.10.
CPU_DOT_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"


def use_eigen_for_cpu_dots() -> bool:
    """Add CPU_DOT_FLAG to XLA_FLAGS (read when the backend starts, so call this first) unless
    the user chose a YNN fusion type or jaxlib is not 0.10.x. Returns whether it was added."""
    import jaxlib

    flags = os.environ.get("XLA_FLAGS", "")
    if not jaxlib.__version__.startswith("0.10."):
        return False
    if "ynn_fusion_type" in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_DOT_FLAG}".strip()
    return True


def unroll_threefry_on_cpu() -> bool:
    """Lower jax's threefry PRNG on CPU the way it is lowered everywhere else: the 20 rounds
    unrolled, one fused pass over the array. On CPU jax emits them as a 5-iteration loop (to keep
    compile times down), and each iteration is a pass over the whole array in memory, so
    dropout's bits take several times longer that way; unrolled, XLA's first compile of a step
    takes longer (the persistent cache serves later runs; figures in BENCHMARKS.md). The same
    bits either way (the same function, jax's own unrolled lowering; tests/test_jax_train.py
    compares them). Programs compiled afterwards use it. Returns False, changing nothing, where
    jax has moved the rule.
    (A jax lowering rule, not an XLA flag: it is jax that chooses the loop.)"""
    try:
        from jax._src.random.threefry2x32 import _threefry2x32_lowering_rule as unrolled
        from jax.extend.random import threefry2x32_p
        from jax.interpreters.mlir import register_lowering
    except ImportError:
        return False
    # inline=False as jax registers it for the other backends: one out-of-line function.
    register_lowering(threefry2x32_p, unrolled, platform="cpu", inline=False)
    return True


def apply_cpu_settings() -> None:
    """Both settings above; call before JAX starts its backend (the XLA flag is read then)."""
    use_eigen_for_cpu_dots()
    unroll_threefry_on_cpu()
