#!/usr/bin/env python3
"""Download a released GPT-2 model, as the original ``download_model.py`` did (but robustly).

    download_model 124M                     # -> models/124M/{checkpoint, encoder.json, ...}
    python scripts/download_model.py 355M --models_dir /data/models
"""
import sys

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def download_model(model_name, *, models_dir='models', base_url=None, retries=3):
    """Download the seven files of a released model into MODELS_DIR/MODEL_NAME.

    Files already there are skipped; an interrupted download resumes where it stopped.

    Args:
        model_name: 124M, 355M, 774M or 1558M (the old names 117M and 345M mean 124M and 355M).
        models_dir: Parent folder of the model folders.
        base_url: Where the model folders are (default: OpenAI's storage, or $GPT2_MODELS_URL).
        retries: Extra tries per file after a connection error, time-out or server error.
    """
    from gpt2_common.download import download_model as fetch_model

    cli.check_int("retries", retries, 0)
    folder = fetch_model(model_name, str(models_dir), base_url=base_url, retries=retries,
                         progress=cli.isatty(sys.stderr))
    print(f"model files are in {folder}")


def main():
    """Console-script entry point."""
    cli.run(download_model, name="download_model")


if __name__ == "__main__":
    main()
