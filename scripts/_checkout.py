"""``python scripts/<name>.py`` from a checkout: run that checkout's code, installed or not.

Every script starts with::

    if __name__ == "__main__":  # python scripts/<name>.py
        import _checkout  # noqa: F401

Run as a file, a script's own folder is ``sys.path[0]``, so this module is found next to it and
puts the checkout's ``src/`` first on ``sys.path``: ``gpt2_common``, ``gpt2_tf`` and
``gpt2_torch`` then come from the same checkout as the script (no ``pip install`` needed, and an
installed copy elsewhere cannot be mixed in). Installed console scripts (``gpt2_score`` ...)
import the scripts as modules of ``gpt2_scripts``, where ``__name__`` is not ``"__main__"``: they
use the installed packages and never import this.
"""
import os
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

if os.path.isdir(os.path.join(SRC, "gpt2_common")) and (not sys.path or sys.path[0] != SRC):
    sys.path.insert(0, SRC)
