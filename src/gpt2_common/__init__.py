"""Everything the TensorFlow and PyTorch backends share (no framework imports here)."""
from .hparams import HParams, HParamsError, load_hparams
from .interface import BACKENDS, GPT2Model, ModelError, load_model, sample_sequence
from .sampling import Sampler, SamplingError

__all__ = ["BACKENDS", "GPT2Model", "HParams", "HParamsError", "ModelError", "Sampler",
           "SamplingError", "load_hparams", "load_model", "sample_sequence"]
