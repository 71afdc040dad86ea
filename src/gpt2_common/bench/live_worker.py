"""A benchmark worker that stays loaded and times one run per request (``gpt2_benchmark --baseline``,
see :mod:`gpt2_common.bench.compare`).

Run as a file, not imported from this package: ``gpt2_common`` then resolves to whichever checkout
is first on ``PYTHONPATH`` (this one or the baseline), so this file relies only on what every
version of the toolkit has: ``load_model(backend, dir, device, dtype)``, the model's
``_prefill(tokens, mask)`` and ``generate(..., temperature=0, callback=)``, and stdlib + NumPy.

    python live_worker.py BACKEND MODEL_DIR DEVICE DTYPE THREADS

prints ``ready`` and the folder of the ``gpt2_common`` it imported once loaded, then answers each
JSON line on stdin with one line, tokens per second:
``{"op": "decode", "batch": B, "tokens": N, "prompt": P, "seed": S}`` times greedy generation of N
tokens after a random P-token prompt (the steps after the first, as the regular benchmark does);
``{"op": "prefill", "T": T, "seed": S}`` times ``_prefill`` of a random T-token prompt.
"""
import json
import os
import sys
import time

if __name__ == "__main__" and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run as a file: this folder's modules (run, worker, ...) must not shadow others

#: The native thread pools' variables, set before a framework is imported (here and in worker.py).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_thread_env(threads: int) -> None:
    """Give every native thread pool ``threads`` threads (0 or None: leave the defaults)."""
    if threads:
        for var in THREAD_VARS:
            os.environ[var] = str(threads)


def main(backend: str, model_dir: str, device: str, dtype: str, threads: int) -> None:
    import numpy as np

    if backend == "tf":
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    else:
        import torch

        if threads:
            torch.set_num_threads(threads)
    import gpt2_common
    from gpt2_common.interface import load_model

    kwargs = {} if dtype == "float32" else {"dtype": dtype}  # a baseline may predate --dtype
    model = load_model(backend, model_dir, device=device, **kwargs)
    n_vocab = model.hparams.n_vocab
    print("ready", os.path.dirname(os.path.abspath(gpt2_common.__file__)), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        rng = np.random.default_rng(req["seed"])
        if req["op"] == "decode":
            ctx = rng.integers(0, n_vocab, size=(req["batch"], req["prompt"]), dtype=np.int32)
            stamps = []
            model.generate(ctx, req["tokens"], temperature=0,
                           callback=lambda step, new: stamps.append(time.perf_counter()))
            rate = req["batch"] * (len(stamps) - 1) / (stamps[-1] - stamps[0])
        else:
            tokens = rng.integers(0, n_vocab, size=(1, req["T"]), dtype=np.int32)
            t = time.perf_counter()
            model._prefill(tokens, np.ones_like(tokens))
            rate = req["T"] / (time.perf_counter() - t)
        print(repr(rate), flush=True)


if __name__ == "__main__":
    b, d, dev, dt, th = sys.argv[1:6]
    set_thread_env(int(th))
    main(b, d, dev, dt, int(th))
