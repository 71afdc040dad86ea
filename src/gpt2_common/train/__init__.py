"""Training, shared by both backends: data, optimizer rules, schedule, the loop and the run folder.

The backends (``gpt2_torch/train.py``, ``gpt2_tf/train.py``) supply only the step: loss and
gradients, the update rule written out in their own ops, and state in and out as numpy arrays.
"""
