"""Download OpenAI's released GPT-2 models and the gpt-2-output-dataset, robustly.

    download_model("124M", "models")                  # models/124M/{checkpoint, encoder.json, ...}
    download_dataset(["webtext", "small-117M"], "valid", "data")   # data/<name>.valid.jsonl

What the original ``download_model.py`` lacked, every file here gets: names are checked before
anything is fetched (nothing can land outside ``models_dir``/``data_dir``); an HTTP error status
is an error (an error page is never saved); connection errors, time-outs, 5xx answers and bodies
cut short are retried with exponential backoff, resuming with an HTTP ``Range`` request; data is
written to ``<file>.part`` and renamed to its final name only when complete (so a final name
always means a complete file, and a re-run skips it; a ``.part`` left by an interrupted run is
resumed); a tqdm progress bar per file; one clear line when the host cannot be reached.

The base URLs can be overridden by argument or by the environment variables ``GPT2_MODELS_URL``
and ``GPT2_DATASET_URL`` (tests point them at a local server).
"""
from __future__ import annotations

import contextlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterable, List, Optional, Sequence, Union

MODELS_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
DATASET_URL = "https://openaipublic.blob.core.windows.net/gpt-2/output-dataset/v1"

MODEL_NAMES = ("124M", "355M", "774M", "1558M")
ALIASES = {"117M": "124M", "345M": "355M"}  # the names the models were first released under
MODEL_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
               "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")

DATASETS = ("webtext",
            "small-117M", "small-117M-k40", "small-117M-nucleus",
            "medium-345M", "medium-345M-k40", "medium-345M-nucleus",
            "large-762M", "large-762M-k40", "large-762M-nucleus",
            "xl-1542M", "xl-1542M-k40", "xl-1542M-nucleus")
SPLITS = ("train", "valid", "test")

BACKOFF = 1.0  # seconds before the first retry; doubles after each failed try
CHUNK = 1 << 20


class DownloadError(Exception):
    """A download that cannot succeed (bad name, HTTP error, unreachable host); one-line message."""


class _Retry(Exception):
    """A failure worth another try (connection, time-out, 5xx, short body)."""


def canonical_name(name: object) -> str:
    """The released model's current name for ``name`` (``117M`` -> ``124M``), or :class:`DownloadError`."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise DownloadError(f"invalid model name {name!r}: use one of {', '.join(MODEL_NAMES)}")
    name = ALIASES.get(name, name)
    if name not in MODEL_NAMES:
        raise DownloadError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)} "
                            f"(or the old names {', '.join(ALIASES)})")
    return name


def download_model(model_name: str, models_dir: str = "models", *, files: Sequence[str] = MODEL_FILES,
                   base_url: Optional[str] = None, progress: bool = True, retries: int = 3,
                   timeout: float = 30.0) -> str:
    """Download a released model's files into ``models_dir/<name>``; returns that folder.

    ``files`` picks a subset of :data:`MODEL_FILES` (e.g. just the vocabulary). Files already there
    are skipped. ``retries`` extra tries per file, ``timeout`` seconds per network read.
    """
    name = canonical_name(model_name)
    bad = [f for f in files if f not in MODEL_FILES]
    if bad:
        raise DownloadError(f"unknown model file {bad[0]!r}: the files are {', '.join(MODEL_FILES)}")
    base = (base_url or os.environ.get("GPT2_MODELS_URL") or MODELS_URL).rstrip("/")
    target = os.path.join(models_dir, name)
    with _removed_if_empty_on_error([models_dir, target]):
        for f in files:
            fetch(f"{base}/{name}/{f}", os.path.join(target, f), progress=progress, retries=retries,
                  timeout=timeout)
    return target


@contextlib.contextmanager
def _removed_if_empty_on_error(folders: Sequence[str]):
    """On an error, remove those of ``folders`` (outermost first) that did not exist before and are
    still empty, so a failed download leaves no trace but resumable ``.part`` files."""
    new = [d for d in folders if not os.path.exists(d)]
    try:
        yield
    except BaseException:
        for d in reversed(new):
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise


def _choose(values: Union[None, str, Iterable[str]], allowed: Sequence[str], what: str) -> List[str]:
    if values is None:
        return list(allowed)
    chosen = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    for v in chosen:
        if v not in allowed:
            raise DownloadError(f"unknown {what} {v!r}: choose from {', '.join(allowed)}")
    if not chosen:
        raise DownloadError(f"no {what} given: choose from {', '.join(allowed)}")
    return chosen


def download_dataset(names: Union[None, str, Iterable[str]] = None,
                     splits: Union[None, str, Iterable[str]] = None, data_dir: str = "data", *,
                     base_url: Optional[str] = None, progress: bool = True, retries: int = 3,
                     timeout: float = 30.0) -> List[str]:
    """Download ``<name>.<split>.jsonl`` of the gpt-2-output-dataset into ``data_dir``.

    ``names`` (default: all of :data:`DATASETS`) and ``splits`` (default: all of :data:`SPLITS`)
    may be lists or comma-separated strings. Returns the paths, in order.
    """
    names_, splits_ = _choose(names, DATASETS, "dataset"), _choose(splits, SPLITS, "split")
    base = (base_url or os.environ.get("GPT2_DATASET_URL") or DATASET_URL).rstrip("/")
    paths = []
    with _removed_if_empty_on_error([data_dir]):
        for n in names_:
            for s in splits_:
                path = os.path.join(data_dir, f"{n}.{s}.jsonl")
                fetch(f"{base}/{n}.{s}.jsonl", path, progress=progress, retries=retries, timeout=timeout)
                paths.append(path)
    return paths


def fetch(url: str, dest: str, *, progress: bool = True, retries: int = 3, timeout: float = 30.0) -> bool:
    """Download ``url`` to ``dest`` (via ``dest + ".part"``); False if ``dest`` already existed.

    Raises :class:`DownloadError` on an HTTP error status or after ``retries`` failed retries.
    """
    if os.path.isfile(dest):
        return False
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, progress, timeout)
            os.replace(part, dest)
            return True
        except _Retry as e:
            if attempt == retries:
                tries = "1 try" if retries == 0 else f"{retries + 1} tries"
                raise DownloadError(f"{url}: {e} (gave up after {tries})") from None
            time.sleep(BACKOFF * 2 ** attempt)
    raise AssertionError("unreachable")


def _fetch_once(url: str, part: str, progress: bool, timeout: float) -> None:
    """One try: resume ``part`` from its size; raise :class:`_Retry` for transient failures."""
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    headers = {"User-Agent": "gpt2-toolkit"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part may be complete already
            total = _total_from_content_range(e.headers.get("Content-Range", ""))
            if total == have:
                return
            os.remove(part)
            raise _Retry("server refused to resume; starting again") from None
        if e.code >= 500 or e.code in (408, 429):
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        if os.path.isfile(part):
            os.remove(part)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Retry("timed out") from None
        host = urllib.parse.urlsplit(url).netloc
        raise _Retry(f"cannot reach {host} ({reason}): are you offline?") from None
    except (socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from None

    with resp:
        if resp.status == 206:
            start = _start_from_content_range(resp.headers.get("Content-Range", ""))
            if start != have:  # not the piece we asked for: start over
                os.remove(part)
                raise _Retry("server resumed at the wrong offset; starting again")
            total = _total_from_content_range(resp.headers.get("Content-Range", ""))
            mode = "ab"
        else:  # 200: the whole file (a server that ignores Range, or a fresh start)
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        bar = _progress_bar(os.path.basename(part[:-5]), total, have, progress)
        try:
            with open(part, mode) as f:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        except (socket.timeout, TimeoutError):
            raise _Retry("timed out") from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Retry(f"connection lost ({type(e).__name__})") from None
        finally:
            bar.close()
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise _Retry(f"connection lost after {got} of {total} bytes")


def _start_from_content_range(value: str) -> Optional[int]:
    """``bytes 100-199/200`` -> 100."""
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_from_content_range(value: str) -> Optional[int]:
    """``bytes 100-199/200`` or ``bytes */200`` -> 200."""
    try:
        total = value.rsplit("/", 1)[1]
        return None if total == "*" else int(total)
    except (IndexError, ValueError):
        return None


def _progress_bar(name: str, total: Optional[int], initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"Fetching {name}", unit="B", unit_scale=True,
                unit_divisor=1024, disable=not enabled, leave=True)
