"""The C allocator of a process that trains on TensorFlow (the CPU; glibc on Linux).

A TensorFlow training step allocates and frees several GB of tensors, and how the allocator
keeps what is freed sets the process's peak memory. Measured at the 124M shape, B=4, T=256,
3 steps (AMD EPYC VM, 2 cores): with oneDNN's default CPU allocator (a BFC pool that keeps every
byte it ever held, and fragments over the steps) the peak was 4.4-4.7 GB; with the system
allocator and glibc's defaults (an arena per thread, freed memory kept) 5.6 GB; with the system
allocator, one arena and the free pages handed back after each forward+backward and each update
3.7-3.9 GB, under Hugging Face's 3.9-4.0 GB, at ~10% of TensorFlow's speed. So a process that
loads a TensorFlow model to train calls :func:`prepare_tensorflow_training` before TensorFlow's
first operation, and the trainer :func:`release_free_memory` after each phase. Elsewhere
(macOS, musl) only the environment variable applies.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

TF_SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"  # read at TensorFlow's first operation
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def prepare_tensorflow_training() -> None:
    """Before TensorFlow's first operation: the system allocator instead of oneDNN's pool
    (unless ``$TF_ONEDNN_USE_SYSTEM_ALLOCATOR`` is set), and one glibc arena for threads that
    start from now on (unless ``$MALLOC_ARENA_MAX`` is set). After the first operation TensorFlow
    keeps the allocator it started with."""
    os.environ.setdefault(TF_SYSTEM_ALLOCATOR, "1")
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, 1)


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
