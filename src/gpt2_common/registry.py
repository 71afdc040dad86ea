"""The backend registry: each backend's loaded-model class, imported by name on first use.

The one place that knows where the backends live, so ``gpt2_common`` never imports them at
import time (the backends import ``gpt2_common``; no cycle) and a backend whose framework is not
installed costs nothing until asked for.
"""
from __future__ import annotations

import importlib
from typing import Dict

BACKEND_CLASSES: Dict[str, str] = {  # name -> "module:Class"
    "tf": "gpt2_tf.backend:TFGPT2",
    "torch": "gpt2_torch.backend:TorchGPT2",
}


def backend_class(name: str) -> type:
    """The loaded-model class of backend ``name`` (``KeyError`` for an unknown one)."""
    module, cls = BACKEND_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)
