"""Which device a worker runs on, decided without importing torch where no GPU is present."""

from __future__ import annotations

import ctypes


def cuda_driver_devices() -> int:
    """GPUs the CUDA driver library reports (0 without a driver), asked without importing torch."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def resolve_device(setting: str) -> str:
    """`auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without one is an error.

    torch is imported only where the CUDA driver reports a GPU, so that a CPU worker can do without it.
    """
    if setting == "cpu" or (setting == "auto" and not cuda_driver_devices()):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise RuntimeError("CONVNET_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return "cpu"
