"""The original release's ``sample.py`` entry point: ``sample_sequence`` on a loaded model (the
same function for both backends, see :func:`gpt2_common.interface.sample_sequence`). The loaded
model class is :class:`gpt2_torch.backend.TorchGPT2`."""
from gpt2_common.interface import sample_sequence

__all__ = ["sample_sequence"]
