"""gpt2_common.download against a real HTTP server on 127.0.0.1 that can misbehave on purpose:
drop the connection mid-file, answer 404 or 500, stall, trickle, ignore Range requests, send no
length, or send an HTML page with status 200. It serves a valid model folder (the real vocabulary,
a tiny random checkpoint), since every file is checked before it gets its name."""
from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpt2_common import download
from gpt2_common.download import MODEL_FILES, DownloadError, download_dataset, download_model

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """Serves ``files`` (url path -> bytes). ``behave[path]`` is a list of one-shot behaviours
    consumed per request ("drop", "404", "500", "stall", "stallbody", "norange", "nolength": no
    Content-Length, "nolengthcut": that and half the body, "html": an error page with status 200,
    "trickle": a byte every 20 ms, "gzip": the body gzip-compressed with Content-Encoding: gzip,
    "206": a 206 from byte 10 whatever was asked); ``always[path]`` is the behaviour once those are used up;
    ``requests`` logs ``(path, Range header)``."""

    def __init__(self) -> None:
        self.files: dict = {}
        self.behave: dict = {}
        self.always: dict = {}
        self.requests: list = []
        self.accept_encodings: list = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                server.accept_encodings.append(self.headers.get("Accept-Encoding"))
                queue = server.behave.get(self.path) or []
                how = queue.pop(0) if queue else server.always.get(self.path, "ok")
                body = server.files.get(self.path)
                if body is None or how == "404":
                    self.send_error(404, "Not Found")
                    return
                if how == "gzip":  # compressed although identity was asked for
                    packed = gzip.compress(body)
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(packed)))
                    self.end_headers()
                    self.wfile.write(packed)
                    return
                if how == "206":  # a piece from the middle, unasked
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 10-{len(body) - 1}/{len(body)}")
                    self.send_header("Content-Length", str(len(body) - 10))
                    self.end_headers()
                    self.wfile.write(body[10:])
                    return
                if how == "500":
                    self.send_error(500, "Internal Server Error")
                    return
                if how == "stall":
                    time.sleep(1.5)
                if how == "html":
                    page = b"<html><body>Service temporarily unavailable</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                start = 0
                if rng and how != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if not how.startswith("nolength"):
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if how == "nolengthcut":  # the end of the body is the end of the connection
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    return
                if how == "trickle":
                    for i in range(start, min(len(body), start + 200)):  # at most 4 s
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.02)
                    return
                if how == "stallbody":  # headers at once, then nothing
                    self.wfile.flush()
                    time.sleep(1.5)
                if how == "drop":  # announce everything, send half, hang up
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def model_files(vocab_dir, tmp_path_factory) -> dict:
    """A valid model folder's files (name -> bytes): the real vocabulary, a tiny random checkpoint
    and random bytes as model.ckpt.meta (which nothing reads or checks)."""
    from gpt2_common.hparams import HParams
    from gpt2_common.weights import random_weights, save_model

    hp = HParams(n_vocab=300, n_ctx=16, n_embd=8, n_head=2, n_layer=2)
    d = save_model(str(tmp_path_factory.mktemp("served")), hp, random_weights(hp), str(vocab_dir))
    files = {f: Path(d, f).read_bytes() for f in MODEL_FILES if f != "model.ckpt.meta"}
    files["model.ckpt.meta"] = os.urandom(3000)
    return files


@pytest.fixture
def server(monkeypatch, model_files):
    monkeypatch.setattr(download, "BACKOFF", 0.01)
    s = Server()
    for f, body in model_files.items():
        s.files[f"/124M/{f}"] = body
    yield s
    s.close()


def final_files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".part")) if folder.exists() else []


def test_downloads_all_seven_files(server, tmp_path):
    folder = download_model("124M", str(tmp_path), base_url=server.url, progress=False)
    assert folder == str(tmp_path / "124M")
    assert final_files(tmp_path / "124M") == sorted(MODEL_FILES)
    for f in MODEL_FILES:
        assert (tmp_path / "124M" / f).read_bytes() == server.files[f"/124M/{f}"]


def test_resumes_after_dropped_connection(server, tmp_path):
    path = "/124M/model.ckpt.data-00000-of-00001"
    server.behave[path] = ["drop"]
    download_model("124M", str(tmp_path), files=["model.ckpt.data-00000-of-00001"], base_url=server.url,
                   progress=True)  # the bar goes to (captured) stderr
    got = (tmp_path / "124M" / "model.ckpt.data-00000-of-00001").read_bytes()
    assert got == server.files[path]
    ranges = [r for p, r in server.requests if p == path]
    assert ranges[0] is None and ranges[1] == f"bytes={len(server.files[path]) // 2}-"
    assert final_files(tmp_path / "124M") == ["model.ckpt.data-00000-of-00001"]  # no .part left


def test_part_already_complete_answered_416(server, tmp_path):
    path = "/124M/encoder.json"
    (tmp_path / "124M").mkdir()
    (tmp_path / "124M" / "encoder.json.part").write_bytes(server.files[path])
    download_model("124M", str(tmp_path), files=["encoder.json"], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / "encoder.json").read_bytes() == server.files[path]
    assert server.requests == [(path, f"bytes={len(server.files[path])}-")]
    assert not (tmp_path / "124M" / "encoder.json.part").exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    path = "/124M/model.ckpt.index"
    server.behave[path] = ["drop", "norange"]
    download_model("124M", str(tmp_path), files=["model.ckpt.index"], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / "model.ckpt.index").read_bytes() == server.files[path]


def test_404_fails_at_once_and_leaves_nothing(server, tmp_path):
    del server.files["/124M/vocab.bpe"]
    with pytest.raises(DownloadError, match=r"vocab.bpe: HTTP 404") as e:
        download_model("124M", str(tmp_path), files=["vocab.bpe"], base_url=server.url, progress=False)
    assert "\n" not in str(e.value)
    assert len([r for r in server.requests if r[0] == "/124M/vocab.bpe"]) == 1  # no retries
    assert list(tmp_path.iterdir()) == []  # not even the model folder


def test_500_is_retried(server, tmp_path):
    server.behave["/124M/hparams.json"] = ["500", "500"]
    download_model("124M", str(tmp_path), files=["hparams.json"], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / "hparams.json").read_bytes() == server.files["/124M/hparams.json"]


def test_persistent_500_gives_up(server, tmp_path):
    server.always["/124M/hparams.json"] = "500"
    with pytest.raises(DownloadError, match="HTTP 500.*gave up after 3 tries"):
        download_model("124M", str(tmp_path), files=["hparams.json"], base_url=server.url,
                       progress=False, retries=2)
    assert final_files(tmp_path / "124M") == []


@pytest.mark.parametrize("how", ["stall", "stallbody"])
def test_stalled_server_times_out(server, tmp_path, how):
    server.always["/124M/checkpoint"] = how
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        download_model("124M", str(tmp_path), files=["checkpoint"], base_url=server.url,
                       progress=False, retries=1, timeout=0.5)
    assert time.monotonic() - start < 5
    assert final_files(tmp_path / "124M") == []


DATA, INDEX = "model.ckpt.data-00000-of-00001", "model.ckpt.index"


@pytest.mark.parametrize("file", [DATA, "hparams.json"])
def test_body_without_length_cut_short_is_resumed(server, tmp_path, file):
    """A 200 without Content-Length whose body is cut short used to be saved as complete."""
    path = f"/124M/{file}"
    body = server.files[path]
    server.behave[path] = ["nolengthcut"]
    download_model("124M", str(tmp_path), files=[file], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / file).read_bytes() == body
    ranges = [r for p, r in server.requests if p == path]
    # the probe from the end gets 206 (there is more): the cut is noticed and the next try resumes
    assert ranges == [None, f"bytes={len(body) // 2}-", f"bytes={len(body) // 2}-"]


def test_body_without_length_complete_is_confirmed(server, tmp_path):
    path = f"/124M/{INDEX}"
    server.behave[path] = ["nolength"]
    download_model("124M", str(tmp_path), files=[INDEX], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / INDEX).read_bytes() == server.files[path]
    assert [r for p, r in server.requests if p == path] == [None, f"bytes={len(server.files[path])}-"]


def test_cut_body_from_a_server_ignoring_range_fails_the_checks(server, tmp_path):
    """Without Range support the end cannot be confirmed: the file is not saved."""
    path = f"/124M/{INDEX}"
    server.behave[path] = ["nolengthcut", "norange"]
    with pytest.raises(DownloadError, match=r"model.ckpt.index: .*; not saved \(run again"):
        download_model("124M", str(tmp_path), files=[INDEX], base_url=server.url, progress=False)
    assert not (tmp_path / "124M").exists()  # no final name, no .part (and the empty folder went)
    download_model("124M", str(tmp_path), files=[INDEX], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / INDEX).read_bytes() == server.files[path]


@pytest.mark.parametrize("file", ["hparams.json", "encoder.json", "vocab.bpe", "checkpoint", INDEX])
def test_html_page_with_status_200_is_not_saved(server, tmp_path, file):
    server.behave[f"/124M/{file}"] = ["html"]
    with pytest.raises(DownloadError, match=f"/124M/{file}: .*; not saved") as e:
        download_model("124M", str(tmp_path), files=[file], base_url=server.url, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "124M").exists()
    download_model("124M", str(tmp_path), files=[file], base_url=server.url, progress=False)  # fetched again
    assert (tmp_path / "124M" / file).read_bytes() == server.files[f"/124M/{file}"]


def _corrupt(body: bytes) -> bytes:
    return body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 1]) + body[len(body) // 2 + 1:]


@pytest.mark.parametrize("file, damage, words", [
    ("encoder.json", _corrupt, "SHA-256 .* is not that of GPT-2's encoder.json"),
    ("vocab.bpe", lambda b: b[:b.rindex(b"\n", 0, len(b) // 2) + 1], "is not that of GPT-2's vocab.bpe"),
    ("hparams.json", lambda b: b'{"n_vocab": 50257}', "missing field 'n_ctx'"),
    ("checkpoint", lambda b: b"all good\n", "not a checkpoint state file"),
    (INDEX, _corrupt, "checksum mismatch"),
    (DATA, _corrupt, "crc32c mismatch"),
    (DATA, lambda b: b[:-4], "truncated"),
])
def test_invalid_files_are_not_kept(server, tmp_path, file, damage, words):
    """Complete transfers of wrong content: the file is deleted and a re-run fetches it again."""
    path = f"/124M/{file}"
    good = server.files[path]
    server.files[path] = damage(good)
    files = [INDEX, DATA] if file == DATA else [file]  # data is checked against the index
    with pytest.raises(DownloadError, match=words) as e:
        download_model("124M", str(tmp_path), files=files, base_url=server.url, progress=False)
    assert "\n" not in str(e.value) and "not saved" in str(e.value)
    assert (os.listdir(tmp_path / "124M") == [INDEX]) if file == DATA else not (tmp_path / "124M").exists()
    server.files[path] = good
    download_model("124M", str(tmp_path), files=files, base_url=server.url, progress=False)
    assert (tmp_path / "124M" / file).read_bytes() == good


def test_trickling_server_is_a_stall(server, tmp_path):
    """A byte every 20 ms never trips the socket time-out; the stall rule gives up, keeps the
    .part, and a later run resumes it."""
    path = f"/124M/{DATA}"
    server.always[path] = "trickle"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"stalled \(less than 1000 bytes in 0.3 s\) "
                                            r"\(gave up after 2 tries; run again to resume\)"):
        download_model("124M", str(tmp_path), files=[DATA], base_url=server.url, progress=False,
                       retries=1, stall_bytes=1000, stall_seconds=0.3)
    assert time.monotonic() - start < 3
    part = tmp_path / "124M" / (DATA + ".part")
    have = part.stat().st_size
    assert 0 < have < 1000 and final_files(tmp_path / "124M") == []
    server.always.clear()
    download_model("124M", str(tmp_path), files=[DATA], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / DATA).read_bytes() == server.files[path]
    assert server.requests[-1] == (path, f"bytes={have}-")


def test_sampling_cli_download_keeps_part_and_resumes(server, tmp_path, monkeypatch):
    """The CLIs' automatic download used to delete the .part and the models folder on failure or
    Ctrl-C; now it keeps them like download_model, and the next run resumes."""
    from gpt2_common import cli

    monkeypatch.setenv("GPT2_MODELS_URL", server.url)
    model_dir = str(tmp_path / "models" / "124M")
    server.always[f"/124M/{DATA}"] = "drop"
    with pytest.raises(cli.UsageError, match="download failed .*run again to resume"):
        cli.ensure_model_files(model_dir, "124M", err=open(os.devnull, "w"))
    kept = sorted(os.listdir(model_dir))
    assert kept == sorted([f for f in MODEL_FILES if f != DATA] + [DATA + ".part"])  # data comes last
    half = os.path.getsize(os.path.join(model_dir, DATA + ".part"))
    assert half > 0
    server.always.clear()
    real = download._fetch_once

    def interrupted(url, part, *args):
        real(url, part, *args)
        raise KeyboardInterrupt  # Ctrl-C after some data arrived
    monkeypatch.setattr(download, "_fetch_once", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.ensure_model_files(model_dir, "124M", err=open(os.devnull, "w"))
    assert os.path.getsize(os.path.join(model_dir, DATA + ".part")) == len(server.files[f"/124M/{DATA}"])
    monkeypatch.setattr(download, "_fetch_once", real)
    server.requests.clear()
    cli.ensure_model_files(model_dir, "124M", err=open(os.devnull, "w"))
    assert final_files(Path(model_dir)) == sorted(MODEL_FILES)
    # only the data was asked for again, from where the .part ended (416: complete)
    assert server.requests == [(f"/124M/{DATA}", f"bytes={len(server.files[f'/124M/{DATA}'])}-")]


def test_sampling_cli_download_stopped_before_the_data_resumes(server, tmp_path, monkeypatch):
    """Stopped after the index and before any data arrived: the folder must not count as complete."""
    from gpt2_common import cli

    monkeypatch.setenv("GPT2_MODELS_URL", server.url)
    model_dir = tmp_path / "models" / "124M"
    download_model("124M", str(tmp_path / "models"), files=[f for f in MODEL_FILES if f != DATA],
                   base_url=server.url, progress=False)
    assert cli.missing_model_files(str(model_dir)) == [DATA]
    cli.ensure_model_files(str(model_dir), "124M", err=open(os.devnull, "w"))
    assert final_files(model_dir) == sorted(MODEL_FILES)
    assert cli.missing_model_files(str(model_dir)) == []


def test_rerun_skips_complete_files(server, tmp_path):
    download_model("124M", str(tmp_path), base_url=server.url, progress=False)
    server.requests.clear()
    download_model("124M", str(tmp_path), base_url=server.url, progress=False)
    assert server.requests == []


def test_names_are_checked_before_anything_happens(server, tmp_path):
    for bad in ["../x", "a/b", "/abs", "..", "", "124m", "2B"]:
        with pytest.raises(DownloadError, match="model"):
            download_model(bad, str(tmp_path / "m"), base_url=server.url, progress=False)
    with pytest.raises(DownloadError, match="unknown model file"):
        download_model("124M", str(tmp_path / "m"), files=["../../etc/passwd"], base_url=server.url)
    with pytest.raises(DownloadError, match="invalid base URL"):
        download_model("124M", str(tmp_path / "m"), base_url="ftp.example.com/models")
    assert server.requests == [] and not (tmp_path / "m").exists()


def test_files_may_be_one_name(server, tmp_path):
    download_model("124M", str(tmp_path), files="vocab.bpe", base_url=server.url, progress=False)
    assert final_files(tmp_path / "124M") == ["vocab.bpe"]


def test_old_name_maps_to_new(server, tmp_path):
    assert download_model("117M", str(tmp_path), files=["hparams.json"], base_url=server.url,
                          progress=False) == str(tmp_path / "124M")
    assert server.requests[0][0] == "/124M/hparams.json"


def test_environment_variable_sets_base_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_MODELS_URL", server.url)
    download_model("124M", str(tmp_path), files=["vocab.bpe"], progress=False)
    assert (tmp_path / "124M" / "vocab.bpe").exists()
    # the argument wins over the environment
    monkeypatch.setenv("GPT2_MODELS_URL", "http://127.0.0.1:1/nothing-here")
    download_model("124M", str(tmp_path), files=["hparams.json"], base_url=server.url + "/",
                   progress=False)
    assert server.requests[-1][0] == "/124M/hparams.json"
    # the dataset has its own variable
    server.files["/webtext.valid.jsonl"] = b"{}\n"
    monkeypatch.setenv("GPT2_DATASET_URL", server.url)
    assert download_dataset("webtext", "valid", str(tmp_path / "d"), progress=False) == [
        os.path.join(str(tmp_path / "d"), "webtext.valid.jsonl")]


def test_offline_is_one_clear_line(tmp_path):
    port = closed_port()
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1.*offline") as e:
        download_model("124M", str(tmp_path / "models"), files=["vocab.bpe"],
                       base_url=f"http://127.0.0.1:{port}", progress=False, retries=0)
    assert "\n" not in str(e.value) and "after 1 try" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_dataset_names_and_splits(server, tmp_path):
    for name in ("webtext", "small-117M-k40"):
        for split in ("valid", "test"):
            server.files[f"/{name}.{split}.jsonl"] = f'{{"id": 0, "text": "{name} {split}"}}\n'.encode()
    paths = download_dataset("webtext,small-117M-k40", ["valid", "test"], str(tmp_path),
                             base_url=server.url, progress=False)
    assert [Path(p).name for p in paths] == ["webtext.valid.jsonl", "webtext.test.jsonl",
                                             "small-117M-k40.valid.jsonl", "small-117M-k40.test.jsonl"]
    assert Path(paths[3]).read_text() == '{"id": 0, "text": "small-117M-k40 test"}\n'
    assert [p for p, _ in server.requests] == ["/webtext.valid.jsonl", "/webtext.test.jsonl",
                                               "/small-117M-k40.valid.jsonl", "/small-117M-k40.test.jsonl"]
    server.requests.clear()
    with pytest.raises(DownloadError, match="unknown dataset 'gpt5': choose from webtext, small-117M"):
        download_dataset("gpt5", "valid", str(tmp_path / "x"), base_url=server.url)
    with pytest.raises(DownloadError, match="unknown split 'dev': choose from train, valid, test"):
        download_dataset("webtext", "dev", str(tmp_path / "x"), base_url=server.url)
    with pytest.raises(DownloadError, match="HTTP 404"):  # not served
        download_dataset(["webtext"], ["train"], str(tmp_path / "x"), base_url=server.url, progress=False)
    assert not (tmp_path / "x").exists()
    assert server.requests == [("/webtext.train.jsonl", None)]


def test_dataset_defaults_to_everything(server, tmp_path):
    assert len(download.DATASETS) == 13 and "xl-1542M-nucleus" in download.DATASETS
    for name in download.DATASETS:
        for split in download.SPLITS:
            server.files[f"/{name}.{split}.jsonl"] = f'{{"text": "{name}.{split}"}}\n'.encode()
    paths = download_dataset(data_dir=str(tmp_path), base_url=server.url, progress=False)
    assert len(paths) == 39 and len(server.requests) == 39
    for p in paths:
        assert Path(p).read_bytes() == server.files["/" + Path(p).name]
    server.requests.clear()
    assert download_dataset(None, "test", str(tmp_path), base_url=server.url, progress=False) == \
        [os.path.join(str(tmp_path), f"{n}.test.jsonl") for n in download.DATASETS]
    assert server.requests == []  # all there already


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return port


def run_script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """``python scripts/<name>.py ...`` as a user runs it: no PYTHONPATH, no download env vars."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "GPT2_MODELS_URL", "GPT2_DATASET_URL")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_cli_scripts(server, tmp_path):
    p = run_script("download_model", "124M", "--models_dir", tmp_path, "--base_url", server.url)
    assert p.returncode == 0, p.stderr
    assert final_files(tmp_path / "124M") == sorted(MODEL_FILES)
    for bad in ("../evil", "999M"):
        p = run_script("download_model", bad, "--models_dir", tmp_path / "x", "--base_url", server.url)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), p.stderr
        assert not (tmp_path / "x").exists()
    for name in ("webtext", "xl-1542M-k40"):
        for split in ("valid", "test"):
            server.files[f"/{name}.{split}.jsonl"] = f'{{"text": "{name}"}}\n'.encode()
    p = run_script("download_dataset", "webtext", "test", "--data_dir", tmp_path / "d", "--base_url", server.url)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "d")) == ["webtext.test.jsonl"]
    assert (tmp_path / "d" / "webtext.test.jsonl").read_bytes() == b'{"text": "webtext"}\n'
    # fire reads a,b as a tuple
    p = run_script("download_dataset", "webtext,xl-1542M-k40", "valid,test", "--data_dir", tmp_path / "e",
                   "--base_url", server.url)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "e")) == ["webtext.test.jsonl", "webtext.valid.jsonl",
                                                  "xl-1542M-k40.test.jsonl", "xl-1542M-k40.valid.jsonl"]
    p = run_script("download_dataset", "webtext", "dev", "--data_dir", tmp_path / "d", "--base_url", server.url)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: unknown split 'dev': choose from train, valid, test"]
    assert sorted(os.listdir(tmp_path / "d")) == ["webtext.test.jsonl"]


def test_cli_offline_and_bad_flags(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    p = run_script("download_model", "355M", "--base_url", url, "--retries", 0, cwd=tmp_path)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("error: cannot reach 127.0.0.1:") and lines[0].endswith("are you offline?")
    p = run_script("download_dataset", "webtext", "valid", "--base_url", url, "--retries", 0, cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = run_script("download_model", "124M", "--retries", -1, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: retries must be an integer >= 0, got -1"]
    assert list(tmp_path.iterdir()) == []  # nothing created, not even models/ or data/


def test_part_files_that_are_links_are_not_followed(server, tmp_path):
    """A symbolic link planted as a .part (model file or dataset file) pointing outside is
    refused with one line; the file it points at stays byte-identical and nothing is fetched."""
    outside = tmp_path / "outside.txt"
    server.files["/webtext.valid.jsonl"] = b'{"text": "x"}\n'
    for f in (DATA, "vocab.bpe", "webtext.valid.jsonl"):
        outside.write_bytes(b"precious, 24 bytes long\n")
        folder = tmp_path / ("data" if f.endswith(".jsonl") else "models/124M")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (f + ".part")).symlink_to(outside)
        server.requests.clear()
        with pytest.raises(DownloadError, match="symbolic link") as e:
            if f.endswith(".jsonl"):
                download_dataset("webtext", "valid", str(folder), base_url=server.url, progress=False)
            else:
                download_model("124M", str(tmp_path / "models"), files=[INDEX, f] if f == DATA else [f],
                               base_url=server.url, progress=False)
        assert "\n" not in str(e.value) and f + ".part" in str(e.value)
        assert outside.read_bytes() == b"precious, 24 bytes long\n", f
        assert not (folder / f).exists() and (folder / (f + ".part")).is_symlink()
        assert all(p != "/" + f and not p.endswith("/" + f) for p, _ in server.requests), f
    # a dangling link would have created its target
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "webtext.valid.jsonl.part").symlink_to(tmp_path / "created.txt")
    with pytest.raises(DownloadError, match="symbolic link"):
        download_dataset("webtext", "valid", str(tmp_path / "d2"), base_url=server.url, progress=False)
    assert not (tmp_path / "created.txt").exists()


def test_a_server_that_cannot_prove_the_end_is_not_believed(server, tmp_path):
    """No Content-Length and Range ignored: a .jsonl cut at a line boundary or a cut
    model.ckpt.meta (which no content check covers) used to be saved as complete; a gzip-encoded
    body as well. Identity is asked for, another encoding refused, and an end nobody can confirm
    is one line, with nothing saved."""
    line = b'{"id": 0, "text": "twelve words of text"}\n'
    server.files["/webtext.valid.jsonl"] = line * 2  # cut in half: one whole line
    cases = [("webtext.valid.jsonl", ["nolengthcut", "norange"], "cannot prove the file complete"),
             ("webtext.valid.jsonl", ["nolength", "norange"], "cannot prove the file complete"),
             ("model.ckpt.meta", ["nolengthcut", "norange"], "cannot prove the file complete"),
             ("model.ckpt.meta", ["gzip"], "Content-Encoding gzip"),
             ("webtext.valid.jsonl", ["gzip"], "Content-Encoding gzip")]
    for i, (f, how, words) in enumerate(cases):
        path = f"/{f}" if f.endswith(".jsonl") else f"/124M/{f}"
        server.behave[path] = list(how)
        server.accept_encodings.clear()
        with pytest.raises(DownloadError, match=words) as e:
            if f.endswith(".jsonl"):
                download_dataset("webtext", "valid", str(tmp_path / str(i)), base_url=server.url, progress=False)
            else:
                download_model("124M", str(tmp_path / str(i)), files=[f], base_url=server.url, progress=False)
        print(f"{f} {how}: {e.value}")
        assert "\n" not in str(e.value) and "not saved" in str(e.value)
        assert not (tmp_path / str(i)).exists()  # no file, no .part, no folder
        assert set(server.accept_encodings) == {"identity"}
        server.behave.clear()


def test_206_to_a_request_without_range_starts_again(server, tmp_path):
    path = f"/124M/{INDEX}"
    server.behave[path] = ["206"]
    download_model("124M", str(tmp_path), files=[INDEX], base_url=server.url, progress=False)
    assert (tmp_path / "124M" / INDEX).read_bytes() == server.files[path]
    assert [r for p, r in server.requests if p == path] == [None, None]


def test_auto_download_failure_lists_only_what_is_missing(server, tmp_path, monkeypatch):
    from gpt2_common import cli

    monkeypatch.setenv("GPT2_MODELS_URL", server.url)
    server.always[f"/124M/{DATA}"] = "404"
    with pytest.raises(cli.UsageError) as e:
        cli.ensure_model_files(str(tmp_path / "124M"), "124M", err=open(os.devnull, "w"))
    print(e.value)
    assert f"model files missing ({DATA}) and the download failed" in str(e.value)
