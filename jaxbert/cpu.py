"""Process-wide settings for XLA's CPU backend, applied by jaxbert's CLIs and benchmark workers.

The first two are about speed only: the numbers a run computes are the same with or without
them; each is measured in BENCHMARKS.md. The third keeps simulated CPU devices from aborting.
(The torch twin has nothing like them: its CPU matmuls are MKL's and its dropout bits come from
one 64-bit draw per four elements; the malloc settings both twins share live in
bertcore/infra/malloc.py.)
"""

from __future__ import annotations

import os
import re

# jaxlib 0.10's CPU backend runs each standalone dot as a YNNPACK fusion; this flag runs them on
# Eigen, XLA's older CPU dot library, which makes the mini step faster on this project's CPU
# (BENCHMARKS.md, "What closed it"). Why Eigen is faster here is not established. It is an
# "experimental" flag, and XLA aborts on a flag it does not know, hence only on jaxlib 0.10.
CPU_DOT_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"


def knows_our_xla_flags() -> bool:
    """Whether this jaxlib is 0.10.x, the one whose XLA has the flags this file adds (XLA aborts
    on a flag it does not know)."""
    import jaxlib

    return jaxlib.__version__.startswith("0.10.")


def use_eigen_for_cpu_dots() -> bool:
    """Add CPU_DOT_FLAG to XLA_FLAGS (read when the backend starts, so call this first) unless
    the user chose a YNN fusion type or jaxlib is not 0.10.x. Returns whether it was added."""
    flags = os.environ.get("XLA_FLAGS", "")
    if not knows_our_xla_flags():
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


# With `--xla_force_host_platform_device_count=N` (the tests, trying pmap/sharded on a laptop)
# jaxlib 0.10 may abort a run in its first steps on a loaded machine: one simulated device
# arrives late at the step's all-reduce and XLA kills the process after its 40 s limit. A longer
# limit turns a slow arrival into a wait rather than an abort (the runs that showed it are in
# BENCHMARKS.md, "Measurements behind the code's choices"). Only for simulated devices (real
# accelerators have their own collectives), and only on jaxlib 0.10.x, whose flags these are
# (XLA aborts on a flag it does not know).
SIMULATED_DEVICES_FLAGS = ("--xla_cpu_collective_call_terminate_timeout_seconds=400",
                           "--xla_cpu_collective_call_warn_stuck_timeout_seconds=10")


def wait_longer_in_collectives() -> bool:
    """Add SIMULATED_DEVICES_FLAGS to XLA_FLAGS when they simulate more than one CPU device, on
    jaxlib 0.10.x, unless the user set a collective timeout. Returns whether they were added."""
    flags = os.environ.get("XLA_FLAGS", "")
    count = re.search(r"xla_force_host_platform_device_count=(\d+)", flags)
    if (count is None or int(count.group(1)) < 2 or "xla_cpu_collective" in flags
            or not knows_our_xla_flags()):
        return False
    os.environ["XLA_FLAGS"] = " ".join([flags, *SIMULATED_DEVICES_FLAGS]).strip()
    return True


def apply_cpu_settings() -> None:
    """The settings above; call before JAX starts its backend (XLA flags are read then)."""
    use_eigen_for_cpu_dots()
    unroll_threefry_on_cpu()
    wait_longer_in_collectives()
