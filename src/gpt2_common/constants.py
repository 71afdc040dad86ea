"""The toolkit's constants, each defined here once and imported everywhere else.

Only the standard library may be imported here (every module, CLI flag checks included, uses it).
"""
from __future__ import annotations

EOT_TOKEN = 50256
"""Id of ``<|endoftext|>`` in the GPT-2 vocabulary (the document separator)."""
ENDOFTEXT = "<|endoftext|>"
"""The document separator token, as text."""

MODEL_NAMES = ("124M", "355M", "774M", "1558M")
"""The released models, smallest first."""
DEFAULT_MODEL = MODEL_NAMES[0]
"""The model the CLIs use when ``--model_name`` is not given (the original's default)."""
OLD_MODEL_NAMES = {"117M": "124M", "345M": "355M"}
"""The names the first two models were released under, mapped to today's."""

VOCAB_FILES = ("encoder.json", "vocab.bpe")
CHECKPOINT_FILES = ("checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta")
MODEL_FILES = tuple(sorted(("hparams.json",) + VOCAB_FILES + CHECKPOINT_FILES))
"""The files of a released model folder, as the original ``download_model.py`` fetched them."""

BACKENDS = ("tf", "torch")
"""The model backends, by the name ``load_model`` and ``--backend`` take."""
DTYPES = ("float32", "bfloat16", "float16")
"""The compute dtypes a model can be loaded in."""
DEFAULT_DTYPE = DTYPES[0]
"""float32, the checkpoints' own dtype."""
TOP_P_MODES = ("original", "holtzman")
"""Nucleus rules: the original release's (cumulative probability <= p) or Holtzman et al.'s."""
TOP_P_ORIGINAL, TOP_P_HOLTZMAN = TOP_P_MODES
"""The two rules by name; the original's is the default."""

VOCAB_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
"""SHA-256 of GPT-2's released vocabulary files (the same for every model size; tiktoken's
``gpt2`` encoding pins the same two hashes). Downloads are checked against them."""
HF_CONFIG_FILE = "config.json"
"""A Hugging Face model folder's configuration (``GPT2Config`` fields)."""
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
"""Where a Hugging Face folder keeps its weights, in the order they are looked for."""
HF_VOCAB_FILES = ("vocab.json", "merges.txt")
"""Hugging Face's names for ``encoder.json`` and ``vocab.bpe`` (same contents)."""
HF_TOKENIZER_FILE = "tokenizer.json"
"""The ``tokenizers`` library's file, which holds the vocabulary and the merges together (the only
vocabulary file transformers 5's ``save_pretrained`` writes)."""
HF_LAYOUT, ORIGINAL_LAYOUT = "hf", "original"
"""The two model-folder layouts the toolkit reads and writes (``gpt2_convert --to``)."""
GLTR_BUCKETS = (10, 100, 1000)
"""GLTR's rank buckets: a token is in the first bucket whose bound its rank does not exceed
(top 10, top 100, top 1000), else in the last one ("beyond")."""
LAMBADA_FILE = "lambada_test.jsonl"
"""OpenAI's preprocessed LAMBADA test set (5,153 passages), as the evaluation reads and stores it."""
