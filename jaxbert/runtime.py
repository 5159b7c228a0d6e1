"""jaxbert's runtime settings: the process-wide settings the entry points make first, the
compilation cache, the compute dtype and the devices' peak memory. (The twin of
torchbert/runtime.py.)"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp

from bertcore.infra.files import cache_root
from bertcore.infra.malloc import keep_freed_memory
from bertcore.train.cli import resolve_dtype

from .cpu import apply_cpu_settings


def configure_process() -> None:
    """Process-wide settings, for entry points only (`main`, benchmark workers), before JAX
    starts its backend and threads: glibc malloc keeps freed memory (bertcore/infra/malloc.py), the
    XLA CPU settings (jaxbert/cpu.py; torchbert has none to make), the compilation cache, and
    orbax's INFO lines kept out of the log."""
    keep_freed_memory()
    apply_cpu_settings()
    enable_compilation_cache()
    # Orbax logs every save/restore step at INFO through absl; a training log at INFO would
    # drown in them. Warnings and errors still show.
    logging.getLogger("absl").setLevel(logging.WARNING)


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk: the second run of a config starts in seconds, not
    tens of seconds. $JAX_COMPILATION_CACHE_DIR wins; else the twinbert cache directory."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax-compilation"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def peak_device_memory_mb() -> float | None:
    """The most memory any local device held (XLA's allocator statistics; None on a CPU, whose
    client keeps none). torchbert reports torch.cuda.max_memory_allocated."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) / 2**20 if peaks else None


def compute_dtype(name: str):
    """The Flax modules' `dtype` for --dtype NAME (bertcore.train.cli.resolve_dtype); params stay
    fp32."""
    accelerator = jax.default_backend() in ("gpu", "tpu")
    return {"fp32": jnp.float32, "bf16": jnp.bfloat16}[resolve_dtype(name, accelerator)]
