"""Inside the model: interventions and interpretability research on top of the named activations
(``gpt2_common.hooks``; ``model.run_with_cache`` / ``run_with_hooks`` / ``activation_gradients``).
Framework-free: numpy in, numpy out, the same on both backends.

* :mod:`.metrics` -- scalar metrics of the logits (loss, logit difference) for activation gradients.
* :mod:`.interventions` -- ablate heads or neurons, patch activations from another run, steer.
* :mod:`.data` -- repeated random tokens (the sequences induction heads are scored and trained on).
* :mod:`.heads` -- per-head induction, previous-token and duplicate-token scores; the known-answer
  report (losses of each copy, each head ablated).
* :mod:`.view` -- one text's attention patterns, logit lens and head scores as JSON-ready numbers
  (``gpt2_inspect``); :mod:`.page` -- those as a self-contained HTML page.
"""
