"""The C allocator of a process that trains on TensorFlow (the CPU; glibc on Linux).

A TensorFlow training step allocates and frees several GB of tensors, and how the allocator
keeps what is freed sets the process's peak memory and part of its speed. oneDNN's default CPU
allocator (TensorFlow's BFC pool: keeps every byte it ever held, reuses it without page faults)
is kept: once the trainer stopped keeping what it need not (accumulation variables, LayerNorm,
GELU and attention intermediates, all gradients through the update), its peak at 124M was
3.66-3.76 GB at B=4, T=256 and 3.69-3.70 GB at B=1, T=1024, under Hugging Face's 3.94-4.06 GB,
at 1.32-1.37x its speed (AMD EPYC VM, 2 cores, lockstep). The system allocator
(``$TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1``, the user's choice) with free pages handed back after each
phase peaked ~200 MB lower at ~1.04-1.29x (each freed page faults again when reused).
So a process that loads a TensorFlow model to train calls :func:`prepare_tensorflow_training`
before TensorFlow's first operation (one glibc arena: threads' arenas otherwise keep their own
free memory), and the trainer :func:`release_free_memory` after each phase (what glibc holds:
TensorFlow's small allocations, and everything under the system allocator). Elsewhere (macOS,
musl) nothing applies.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def prepare_tensorflow_training() -> None:
    """Before TensorFlow's first operation: one glibc arena for threads that start from now on
    (unless ``$MALLOC_ARENA_MAX`` is set)."""
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, 1)


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
