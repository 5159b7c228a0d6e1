"""torchbert's runtime settings: the device, the process-wide settings the entry points make
first, and the device's peak memory. (The twin of jaxbert/runtime.py.)"""

from __future__ import annotations

import torch

from bertcore.infra.errors import UserError
from bertcore.infra.malloc import keep_freed_memory


def configure_process(threads: int | None = None) -> None:
    """Process-wide settings, for entry points only (`main`, benchmark workers), before torch
    starts its threads: glibc malloc keeps freed memory (bertcore/infra/malloc.py), and `threads`
    (--threads) CPU threads when given."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give a positive number of CPU threads (or leave "
                        f"it out for torch's default)")
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(name: str) -> torch.device:
    """--device NAME as a torch.device: auto (cuda when there is one, else cpu), cpu, cuda,
    cuda:N or mps; anything else, or a device this machine lacks, is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or \
            (device.type != "cuda" and device.index not in (None, 0)):
        raise UserError(f"--device {name}: not a device this command runs on; use {DEVICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS (Apple's GPU) is not available here; use --device "
                        f"cpu")
    return device


def peak_device_memory_mb(device: torch.device) -> float | None:
    """The most memory torch's CUDA allocator held on `device` (None on a CPU). jaxbert reports
    XLA's allocator statistics."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
