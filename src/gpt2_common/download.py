"""Download OpenAI's released GPT-2 models and the gpt-2-output-dataset, robustly.

    download_model("124M", "models")                  # models/124M/{checkpoint, encoder.json, ...}
    download_dataset(["webtext", "small-117M"], "valid", "data")   # data/<name>.valid.jsonl

What the original ``download_model.py`` lacked, every file here gets:

* names are checked before anything is fetched or created (nothing can land outside
  ``models_dir``/``data_dir``);
* an HTTP error status is an error naming the URL and status (an error page is never saved);
  404 and other 4xx fail at once;
* connection errors, time-outs (``timeout`` seconds per socket operation, so a stalled server is
  noticed), stalls (less than ``stall_bytes`` bytes arriving in ``stall_seconds`` seconds, so a
  server that trickles is noticed too), 5xx answers and bodies shorter than announced are retried
  with exponential backoff (:data:`BACKOFF` seconds, doubling), resuming with an HTTP ``Range``
  request;
* a body sent without a length (no ``Content-Length``, not chunked) is only taken as complete
  when the server answers a ``Range`` request from its end with 416 (nothing more); if it has
  more, the body was cut short and the download resumes; if it ignores ``Range``, nothing can
  prove the file complete and it is not saved (one line says so);
* ``Accept-Encoding: identity`` is asked for, and a body with another ``Content-Encoding``
  (gzip ...) is refused: its bytes are not the file's;
* data is written to ``<file>.part`` and renamed (``os.replace``) to its final name only when it
  is complete, its size matches what the server announced, and its content passes
  :func:`gpt2_common.validate.check_download` (JSON parses, the vocabulary's SHA-256 is GPT-2's,
  the checkpoint index and data pass the reader's checks). A file that fails is deleted, so a
  re-run fetches it again. So a final name always means a complete, valid file: a re-run skips
  files that exist without asking the server. A ``.part`` file may remain after a network
  failure or Ctrl-C; the next run resumes it. A ``.part`` that is a symbolic link is refused,
  never written through (:func:`gpt2_common.safeio.open_nofollow`);
* a tqdm progress bar per file (on stderr), and one clear line when the host cannot be reached.

The base URLs can be overridden by argument or by the environment variables ``GPT2_MODELS_URL``
and ``GPT2_DATASET_URL``; the argument wins.

(A little over 350 lines: the retry/resume loop and the checks above are one contract for every
file, models and dataset alike.)
"""
from __future__ import annotations

import contextlib
import errno
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterable, Iterator, List, Optional, Sequence, Union

from .constants import MODEL_FILES, MODEL_NAMES
from .constants import OLD_MODEL_NAMES as ALIASES
from .safeio import open_nofollow

MODELS_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
DATASET_URL = "https://openaipublic.blob.core.windows.net/gpt-2/output-dataset/v1"

DATASETS = ("webtext",
            "small-117M", "small-117M-k40", "medium-345M", "medium-345M-k40",
            "large-762M", "large-762M-k40", "xl-1542M", "xl-1542M-k40",
            "small-117M-nucleus", "medium-345M-nucleus", "large-762M-nucleus", "xl-1542M-nucleus")
SPLITS = ("train", "valid", "test")

HEADERS = {"User-Agent": "gpt2-toolkit", "Accept-Encoding": "identity"}  # the file's own bytes
BACKOFF = 1.0  # seconds before the first retry; doubles after each failed try (tests lower it)
CHUNK = 1 << 20
STALL_BYTES = 64 << 10
STALL_SECONDS = 60.0
"""The default stall rule: fewer than STALL_BYTES bytes in STALL_SECONDS seconds is a stall."""
_OFFLINE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class DownloadError(Exception):
    """A download that cannot succeed (bad name, HTTP error, unreachable host); one-line message."""


class _Retry(Exception):
    """A failure worth another try (connection, time-out, 5xx, short body)."""

    def __init__(self, message: str, offline: Optional[tuple] = None) -> None:
        super().__init__(message)
        self.offline = offline  # (host, reason) when the host could not be reached at all


def canonical_name(name: object) -> str:
    """The released model's current name for ``name`` (``117M`` -> ``124M``), or :class:`DownloadError`."""
    seps = {"/", "\\", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or not name or any(s in name for s in seps) or "\0" in name \
            or name in (".", ".."):
        raise DownloadError(f"invalid model name {name!r}: use one of {', '.join(MODEL_NAMES)}")
    new = ALIASES.get(name, name)
    if new not in MODEL_NAMES:
        raise DownloadError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)} "
                            f"(or the old names {', '.join(ALIASES)})")
    return new


def download_model(model_name: str, models_dir: str = "models", *, files: Sequence[str] = MODEL_FILES,
                   base_url: Optional[str] = None, progress: bool = True, retries: int = 3,
                   timeout: float = 30.0, stall_bytes: int = STALL_BYTES,
                   stall_seconds: float = STALL_SECONDS) -> str:
    """Download a released model's files into ``models_dir/<name>``; returns that folder.

    ``model_name`` is 124M, 355M, 774M or 1558M (117M and 345M mean 124M and 355M and are saved
    under the new name). ``files`` picks a subset of :data:`MODEL_FILES` (e.g. the vocabulary).
    Files already there are skipped. ``retries``: extra tries per file; ``timeout``: seconds per
    network operation; ``stall_bytes``/``stall_seconds``: the stall rule (see the module). Each
    file is checked (:func:`gpt2_common.validate.check_download`) before it gets its name; the
    checkpoint index is fetched before the data, which is checked against it. Raises
    :class:`DownloadError`; folders it created stay only if they hold a resumable ``.part`` file.
    """
    name = canonical_name(model_name)
    files = (files,) if isinstance(files, str) else tuple(files)
    bad = [f for f in files if f not in MODEL_FILES]
    if bad:
        raise DownloadError(f"unknown model file {bad[0]!r}: the files are {', '.join(MODEL_FILES)}")
    base = _base_url(base_url, ("GPT2_MODELS_URL",), MODELS_URL)
    target = os.path.join(models_dir, name)
    with _removed_if_empty_on_error([models_dir, target]):
        for f in sorted(files, key=lambda f: ".data-" in f):  # the index first: data is checked against it
            fetch(f"{base}/{name}/{f}", os.path.join(target, f), progress=progress, retries=retries,
                  timeout=timeout, stall_bytes=stall_bytes, stall_seconds=stall_seconds)
    return target


def download_dataset(names: Union[None, str, Iterable[str]] = None,
                     splits: Union[None, str, Iterable[str]] = None, data_dir: str = "data", *,
                     base_url: Optional[str] = None, progress: bool = True, retries: int = 3,
                     timeout: float = 30.0, stall_bytes: int = STALL_BYTES,
                     stall_seconds: float = STALL_SECONDS) -> List[str]:
    """Download ``<name>.<split>.jsonl`` of the gpt-2-output-dataset into ``data_dir``.

    ``names`` (default: all of :data:`DATASETS`) and ``splits`` (default: all of :data:`SPLITS`)
    may be lists or comma-separated strings. Returns the paths, names outer, splits inner.
    Files already there are skipped; each line of a new file must parse as JSON before it gets
    its name; otherwise as :func:`download_model`.
    """
    names_, splits_ = _choose(names, DATASETS, "dataset"), _choose(splits, SPLITS, "split")
    base = _base_url(base_url, ("GPT2_DATASET_URL",), DATASET_URL)
    paths = []
    with _removed_if_empty_on_error([data_dir]):
        for n in names_:
            for s in splits_:
                path = os.path.join(data_dir, f"{n}.{s}.jsonl")
                fetch(f"{base}/{n}.{s}.jsonl", path, progress=progress, retries=retries, timeout=timeout,
                      stall_bytes=stall_bytes, stall_seconds=stall_seconds)
                paths.append(path)
    return paths


def _base_url(given: Optional[str], env: Sequence[str], default: str) -> str:
    """The argument, else the first environment variable set, else ``default``; http(s) only."""
    base = given or next((os.environ[v] for v in env if os.environ.get(v)), default)
    if not isinstance(base, str) or urllib.parse.urlsplit(base).scheme not in ("http", "https") \
            or not urllib.parse.urlsplit(base).netloc:
        raise DownloadError(f"invalid base URL {base!r}: give one starting with http:// or https://")
    return base.rstrip("/")


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


@contextlib.contextmanager
def _removed_if_empty_on_error(folders: Sequence[str]) -> Iterator[None]:
    """On an error, remove those of ``folders`` that did not exist before and are still empty."""
    new = [d for d in folders if not os.path.exists(d)]
    try:
        yield
    except BaseException:
        for d in reversed(new):  # innermost first
            with contextlib.suppress(OSError):
                os.rmdir(d)  # fails (and stays) if not empty
        raise


def fetch(url: str, dest: str, *, progress: bool = True, retries: int = 3, timeout: float = 30.0,
          stall_bytes: int = STALL_BYTES, stall_seconds: float = STALL_SECONDS,
          check: bool = True) -> bool:
    """Download ``url`` to ``dest`` (via ``dest + ".part"``); False if ``dest`` already existed.

    With ``check``, the complete file must pass :func:`gpt2_common.validate.check_download` for
    its name before it is renamed; one that fails is deleted. Raises :class:`DownloadError` on an
    HTTP error status, an invalid file, a file that cannot be written, or when ``retries``
    retries of a transient failure (including a stall) have failed as well.
    """
    if os.path.isfile(dest):
        return False  # only ever produced by the rename below, so it is complete
    part = dest + ".part"
    if os.path.islink(part):  # never resumed or written through: it could point anywhere
        raise DownloadError(f"{part} is a symbolic link; not followed (remove it)")
    try:
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the folder of {dest}: {e.strerror or e}") from None
    tries = max(0, int(retries)) + 1
    for attempt in range(tries):
        try:
            _fetch_once(url, part, progress, timeout, stall_bytes, stall_seconds)
            if check:
                _check(url, part, dest)
            os.replace(part, dest)
            return True
        except _Retry as e:
            if attempt + 1 < tries:
                time.sleep(BACKOFF * 2 ** attempt)
                continue
            gave_up = "1 try" if tries == 1 else f"{tries} tries"
            if e.offline:
                host, reason = e.offline
                raise DownloadError(f"cannot reach {host} ({reason}; gave up after {gave_up}): "
                                    "are you offline?") from None
            resume = "; run again to resume" if os.path.isfile(part) else ""
            raise DownloadError(f"{url}: {e} (gave up after {gave_up}{resume})") from None
        except OSError as e:  # the disk, not the network: writing, renaming
            raise DownloadError(f"cannot write {part}: {e.strerror or e}") from None
    raise AssertionError("unreachable")


def _check(url: str, part: str, dest: str) -> None:
    """Delete ``part`` and raise :class:`DownloadError` unless it is a valid ``dest``."""
    from .validate import InvalidFile, check_download

    try:
        check_download(os.path.basename(dest), part, os.path.dirname(dest) or ".")
    except InvalidFile as e:
        os.remove(part)
        raise DownloadError(f"{url}: {e}; not saved (run again to fetch it again)") from None


def _fetch_once(url: str, part: str, progress: bool, timeout: float, stall_bytes: int = STALL_BYTES,
                stall_seconds: float = STALL_SECONDS) -> None:
    """One try: resume ``part`` from its size; raise :class:`_Retry` for transient failures."""
    have = os.lstat(part).st_size if os.path.isfile(part) and not os.path.islink(part) else 0
    headers = dict(HEADERS)
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # nothing left to send: the part may be complete already
            if _content_range(e.headers.get("Content-Range", ""))[1] == have:
                return
            os.remove(part)
            raise _Retry("server refused to resume; starting again") from None
        if e.code >= 500 or e.code in (408, 429):
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        with contextlib.suppress(OSError):
            os.remove(part)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _network_error(url, e.reason) from None
    except (OSError, http.client.HTTPException) as e:
        raise _network_error(url, e) from None

    with resp:
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):  # the bytes on the wire are not the file's
            raise DownloadError(f"{url}: the server sent Content-Encoding {encoding}, not the identity "
                                "asked for; not saved")
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != have:  # not the piece we asked for (or a piece unasked): start over
                with contextlib.suppress(FileNotFoundError):
                    os.remove(part)
                raise _Retry("server resumed at the wrong offset; starting again")
            mode = "ab"
        else:  # 200: the whole file (a fresh start, or a server that ignores Range)
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        unsized = total is None and not getattr(resp, "chunked", False)  # ends when the server hangs up
        bar = _progress_bar(os.path.basename(part[:-len(".part")]), total, have, progress)
        with bar, open_nofollow(part, mode) as f:
            window_start, window_bytes = time.monotonic(), 0
            while True:
                try:
                    chunk = resp.read1(CHUNK)  # whatever has arrived (at least one byte), or b"" at the end
                except (OSError, http.client.HTTPException) as e:  # incl. time-outs, IncompleteRead
                    raise _network_error(url, e) from None
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                if time.monotonic() - window_start >= stall_seconds:
                    if window_bytes < stall_bytes:
                        f.flush()
                        raise _Retry(f"stalled (less than {stall_bytes} bytes in {stall_seconds:g} s)")
                    window_start, window_bytes = time.monotonic(), 0
    got = os.path.getsize(part)
    if total is not None and got != total:
        if got > total:  # cannot be resumed: start over
            os.remove(part)
        raise _Retry(f"connection lost after {got} of {total} bytes")
    if unsized:
        _confirm_end(url, part, got, timeout)


def _confirm_end(url: str, part: str, got: int, timeout: float) -> None:
    """A body without a length ended after ``got`` bytes: ask for the rest (``Range: bytes=got-``).

    416 means there is no more (complete); 206 means the body was cut short (:class:`_Retry`, which
    resumes). A server that ignores ``Range`` (200) cannot prove the file complete: ``part`` is
    deleted and :class:`DownloadError` says so (a cut at a line boundary would pass any check).
    """
    req = urllib.request.Request(url, headers={**HEADERS, "Range": f"bytes={got}-"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if resp.status == 206:
                raise _Retry(f"connection lost after {got} bytes (the server has more)")
        os.remove(part)
        raise DownloadError(f"{url}: the server cannot prove the file complete (no Content-Length, and it "
                            "ignores Range requests); not saved (run again to try again)")
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and _content_range(e.headers.get("Content-Range", ""))[1] in (None, got):
            return
        raise _Retry(f"cannot confirm the end of a body without a length (HTTP {e.code})") from None
    except urllib.error.URLError as e:
        raise _network_error(url, e.reason) from None
    except (OSError, http.client.HTTPException) as e:
        raise _network_error(url, e) from None


def _network_error(url: str, reason: object) -> _Retry:
    """A :class:`_Retry` that says what went wrong, flagged ``offline`` when no connection was made."""
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _Retry("timed out")
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, socket.gaierror) or getattr(reason, "errno", None) in _OFFLINE_ERRNOS:
        return _Retry(f"cannot reach {host} ({reason})", offline=(host, reason))
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        return _Retry(f"connection lost ({type(reason).__name__})")
    return _Retry(f"cannot reach {host} ({reason})")


def _content_range(value: str) -> tuple:
    """``bytes 100-199/200`` -> ``(100, 200)``; ``bytes */200`` -> ``(None, 200)``; None if unknown."""
    start = total = None
    with contextlib.suppress(IndexError, ValueError):
        start = int(value.split()[1].split("-")[0])
    with contextlib.suppress(IndexError, ValueError):
        total = int(value.rsplit("/", 1)[1])
    return start, total


def _progress_bar(name: str, total: Optional[int], initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"Fetching {name}", unit="B", unit_scale=True,
                unit_divisor=1024, disable=not enabled, leave=True)


# ------------------------------------------------------------------------------------------------
# LAMBADA (issue 16): OpenAI's preprocessed test set, on the same host as the models
# ------------------------------------------------------------------------------------------------

LAMBADA_URL = "https://openaipublic.blob.core.windows.net/gpt-2/data"


def download_lambada(data_dir: str = "data", *, base_url: Optional[str] = None, progress: bool = True,
                     retries: int = 3, timeout: float = 30.0) -> str:
    """Download OpenAI's ``lambada_test.jsonl`` into ``data_dir``; returns its path.

    The base URL is the argument, else ``GPT2_LAMBADA_URL``, else :data:`LAMBADA_URL`; a file
    already there is skipped; otherwise as :func:`download_model` (resume, retries, ``.part``).
    """
    from .constants import LAMBADA_FILE

    base = _base_url(base_url, ("GPT2_LAMBADA_URL",), LAMBADA_URL)
    path = os.path.join(data_dir, LAMBADA_FILE)
    with _removed_if_empty_on_error([data_dir]):
        fetch(f"{base}/{LAMBADA_FILE}", path, progress=progress, retries=retries, timeout=timeout)
    return path
