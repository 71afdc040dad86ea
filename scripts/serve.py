#!/usr/bin/env python3
"""Serve GPT-2 over HTTP with an OpenAI-compatible completions API and continuous batching.

    gpt2_serve --model_name 124M --port 8000
    gpt2_serve --model_dir checkpoint/run1 --backend tf --max_batch 8 --api_key secret
    curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "Hello", "max_tokens": 20, "seed": 1}'
"""
if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def serve(*, model_name=cli.DEFAULT_MODEL, models_dir='models', model_dir=None, backend='torch', device=None,
          dtype='float32', host='127.0.0.1', port=8000, max_batch=16, max_queue=64, api_key=None,
          download=True, log_level='info'):
    """Serve a model: POST /v1/completions (OpenAI's completions API, streaming included),
    GET /v1/models, GET /health, GET /metrics (Prometheus), and /tokenize, /detokenize,
    /tokenizer_info (vLLM's, for lm-evaluation-harness's local-completions).

    Requests join the running batch between decoding steps and leave when done (continuous
    batching). A request's tokens and log-probabilities are bit-identical whatever else runs with
    it, and equal those of interactive_conditional_samples / model.generate with the same seed.
    A full queue answers 429 with Retry-After; SIGTERM (or Ctrl-C) stops taking requests, lets
    those in flight finish, and exits 0.

    Args:
        model_name: Which model to use: 124M, 355M, 774M, 1558M (folder in models_dir; a missing
            released model is downloaded unless --nodownload), or another folder in models_dir.
        models_dir: Path to the parent folder containing model subfolders.
        model_dir: Path of a model folder, used instead of models_dir/model_name.
        backend: "torch" (default) or "tf".
        device: cpu, cuda or cuda:N (default: the GPU if there is one).
        dtype: Compute dtype: float32 (default), bfloat16 or float16.
        host: Address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all).
        port: TCP port (default 8000; 0 picks a free one, printed at start).
        max_batch: Rows decoded together (default 16); more requests wait in the queue.
        max_queue: Requests (choices) that may wait for a row before 429 (default 64).
        api_key: Require "Authorization: Bearer KEY" on /v1/* and the tokenizer endpoints.
        download: Download a missing released model (--nodownload: just report it).
        log_level: uvicorn's log level: critical, error, warning, info (default), debug.
    """
    import os
    import signal

    cli.check_backend(backend)
    device = cli.check_device(device)
    dtype = cli.check_dtype(dtype)
    download = cli.check_flag("download", download)
    port = cli.check_int("port", port, 0)
    if port > 65535:
        raise cli.UsageError(f"--port must be at most 65535, got {port}")
    max_batch = cli.check_int("max_batch", max_batch, 1)
    max_queue = cli.check_int("max_queue", max_queue, 1)
    if not isinstance(host, str) or not host:
        raise cli.UsageError(f"--host must be an address such as 127.0.0.1, got {host!r}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key or api_key is True):
        raise cli.UsageError("--api_key takes a non-empty key")
    levels = ("critical", "error", "warning", "info", "debug")
    if log_level not in levels:
        raise cli.UsageError(f"--log_level must be one of {', '.join(levels)}, got {log_level!r}")
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise cli.UsageError(f"gpt2_serve needs the serve extra ({e.name} is missing): "
                             "pip install 'gpt2-toolkit[serve]'") from None

    path, name = cli.resolve_model_dir(model_name, models_dir, model_dir)
    cli.ensure_model_files(path, name, download)
    from gpt2_common.interface import load_model
    from gpt2_common.serve.app import create_app

    model = load_model(backend, path, device=device, dtype=dtype)
    model.encoder  # the vocabulary is read now, not on the first request
    served = os.path.basename(os.path.normpath(path))
    app = create_app(model, served, max_batch=max_batch, max_queue=max_queue, api_key=api_key)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=None,
                            lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGTERM/SIGINT and then raises the signal again once it is done:
    # for SIGTERM that second delivery must not kill the process, so the server exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if not server.started:
        raise cli.UsageError(f"could not listen on {host}:{port}")


def main():
    cli.run(serve, name="gpt2_serve")


if __name__ == "__main__":
    main()
