"""GPT-2 in PyTorch: ``model.GPT2`` (the network) and ``sample.TorchGPT2`` (the loaded model)."""
