"""GPT-2 in TensorFlow 2: ``model.GPT2`` (the network) and ``sample.TFGPT2`` (the loaded model)."""
