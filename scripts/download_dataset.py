#!/usr/bin/env python3
"""Download the gpt-2-output-dataset (WebText and GPT-2 samples, as .jsonl), robustly.

    download_dataset                                   # everything: 13 sets x 3 splits
    download_dataset webtext,small-117M valid,test --data_dir data
"""
import sys

if __name__ == "__main__":  # python scripts/<name>.py: this checkout's src/ first (see _checkout.py)
    import _checkout  # noqa: F401

from gpt2_common import cli  # noqa: E402


def download_dataset(names=None, splits=None, *, data_dir='data', base_url=None, retries=3):
    """Download NAME.SPLIT.jsonl for each name and split into DATA_DIR.

    Files already there are skipped; an interrupted download resumes where it stopped.

    Args:
        names: Comma-separated sets (default: all): webtext, small-117M, small-117M-k40,
            small-117M-nucleus, medium-345M(-k40, -nucleus), large-762M(-k40, -nucleus),
            xl-1542M(-k40, -nucleus).
        splits: Comma-separated splits (default: all): train, valid, test.
        data_dir: Folder to put the files in.
        base_url: Where the files are (default: OpenAI's storage, or $GPT2_DATASET_URL).
        retries: Extra tries per file after a connection error, time-out or server error.
    """
    from gpt2_common.download import download_dataset as fetch_dataset

    cli.check_int("retries", retries, 0)
    for what, value in (("names", names), ("splits", splits)):
        if value is not None and not isinstance(value, (str, list, tuple)):
            raise cli.UsageError(f"--{what} must be comma-separated names, got {value!r}")
    paths = fetch_dataset(names, splits, str(data_dir), base_url=base_url, retries=retries,
                          progress=cli.isatty(sys.stderr))
    print(f"{len(paths)} files in {data_dir}")


def main():
    """Console-script entry point."""
    cli.run(download_dataset, name="download_dataset")


if __name__ == "__main__":
    main()
