"""Serving GPT-2 over HTTP (``gpt2_serve``): an OpenAI-compatible API with continuous batching.

:mod:`.scheduler` (backend-neutral continuous batching, numpy only), :mod:`.protocol` (request
checks and OpenAI's error bodies), :mod:`.app` (the Starlette app; needs the ``serve`` extra),
:mod:`.metrics` (Prometheus), :mod:`.load` (the load test).
"""
