"""torchbert's runtime settings: the device, the process-wide settings the entry points make
first, and the device's peak memory. (The twin of jaxbert/runtime.py.)"""

from __future__ import annotations

import torch

from bertcore.errors import UserError
from bertcore.malloc import keep_freed_memory


def configure_process(threads: int | None = None) -> None:
    """Process-wide settings, for entry points only (`main`, benchmark workers), before torch
    starts its threads: glibc malloc keeps freed memory (bertcore/malloc.py), and `threads`
    (--threads) CPU threads when given."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give a positive number of CPU threads (or leave "
                        f"it out for torch's default)")
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available; use --device cpu")
    return torch.device(name)


def peak_device_memory_mb(device: torch.device) -> float | None:
    """The most memory torch's CUDA allocator held on `device` (None on a CPU). jaxbert reports
    XLA's allocator statistics."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
