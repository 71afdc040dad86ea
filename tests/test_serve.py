"""gpt2_serve (issue 24): continuous batching, batch invariance, the OpenAI API, faults, real clients.

A request's tokens and log-probabilities must be the same bits alone, among 1-15 others of other
lengths, streamed or not, and its tokens equal ``model.generate`` with the same seed, on both
backends. The server runs in-process (uvicorn in a thread, port 0) for the API tests and as a real
``gpt2_serve`` process for SIGTERM; clients are the official ``openai`` package, httpx, and
lm-evaluation-harness's ``local-completions``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import need
from gpt2_common import load_model
from gpt2_common.serve.scheduler import Done, Job, PromptScores, Scheduler, Token

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["torch", "tf"]
SAMPLING = dict(temperature=0.9, top_k=40, top_p=0.95)


@pytest.fixture(scope="module")
def models(make_model_dir):
    d = make_model_dir("tiny", vocab=True)
    return {b: load_model(b, d, device="cpu") for b in BACKENDS}


def run_jobs(model, specs, max_batch=16, late=()):
    """Run jobs ``[(prompt, max_tokens, seed)]`` through a scheduler; those in ``late`` are
    submitted once the others are decoding. Returns each job's (tokens, logprobs, tops, reason)."""
    results = [dict(tokens=[], logprobs=[], tops=[], done=None) for _ in specs]

    def sink(i):
        def on_event(ev):
            r = results[i]
            if isinstance(ev, Token):
                r["tokens"].append(ev.token), r["logprobs"].append(ev.logprob), r["tops"].append(ev.top)
            elif isinstance(ev, Done):
                r["done"] = ev
        return on_event

    jobs = [Job(prompt=p, max_tokens=n, seed=s, on_event=sink(i), logprobs=3, **SAMPLING)
            for i, (p, n, s) in enumerate(specs)]
    sched = Scheduler(model, max_batch=max_batch, max_queue=64)
    sched.submit([j for i, j in enumerate(jobs) if i not in late])  # all admitted at the first step
    sched.start()
    if late:
        deadline = time.monotonic() + 60
        while not any(results[i]["tokens"] for i in range(len(specs)) if i not in late) and time.monotonic() < deadline:
            time.sleep(0.001)
        sched.submit([jobs[i] for i in late])
    sched.stop(timeout=120)
    assert all(r["done"] is not None and r["done"].reason in ("length", "stop") for r in results), results
    return [(r["tokens"], r["logprobs"], r["tops"], r["done"].reason) for r in results]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_is_bit_identical_alone_batched_and_to_generate(models, backend):
    """The target request alone, then among 1, 3 and 15 others of other prompt lengths and
    lengths (so rows join and leave around it), also joining a running batch: same tokens, same
    log-probabilities (float equality, bit for bit), same top alternatives; tokens = generate's."""
    m = models[backend]
    rng = np.random.default_rng(0)
    target = (rng.integers(0, 50256, 7).tolist(), 12, 1234)
    others = [(rng.integers(0, 50256, int(rng.integers(1, 30))).tolist(), int(rng.integers(1, 20)), k)
              for k in range(15)]
    alone = run_jobs(m, [target])[0]
    assert len(alone[0]) == 12 and alone[3] == "length"
    new = m.generate(target[0], 12, seed=1234, **SAMPLING, batch_invariant=True)[0].tolist()
    assert alone[0] == new
    for k in (1, 3, 15):
        batch = others[:k // 2] + [target] + others[k // 2:k]
        got = run_jobs(m, batch)[k // 2]
        assert got == alone, (backend, k)
    got = run_jobs(m, others[:5] + [target], late=(5,))[5]
    assert got == alone, (backend, "joined late")
    # a row's logits from decode_rows do not depend on the rows beside it (more rows than DECODE_ROWS too)
    lg, cache = m.prefill_row(target[0])
    caches = [m.prefill_row(p)[1] for p, _, _ in others] + [cache] + [m.prefill_row(p)[1] for p, _, _ in others[:4]]
    solo, _ = m.decode_rows([5], [m.prefill_row(target[0])[1]])
    many, _ = m.decode_rows([9] * 15 + [5] + [9] * 4, caches)
    assert np.array_equal(many[15], solo[0])


def test_choices_draw_as_generate_rows_and_prompt_scores_match_the_scorer(models):
    """Choice 0 of a request with seed s is generate(seed=s); choice i draws from the rng of row i
    (whatever runs beside it); the echoed prompt's log-probabilities are the scorer's."""
    from gpt2_common.research import score_tokens

    m = models["torch"]
    prompt = [464, 2068, 7586, 21831]
    events = {0: [], 1: []}
    sched = Scheduler(m, max_batch=4)
    sched.submit([Job(prompt=prompt, max_tokens=6, seed=7, row=i, on_event=events[i].append, logprobs=2,
                      score_prompt=(i == 0), **SAMPLING) for i in (0, 1)])
    sched.start()
    sched.stop(timeout=60)
    scores = [e for e in events[0] if isinstance(e, PromptScores)][0]
    ref = score_tokens(m, prompt, prepend_eot=False, top_k=2)
    assert scores.logprobs == [float(x) for x in ref.logprobs]
    assert [t for t, _ in scores.top[0]] == ref.top_tokens[0].tolist()
    toks = [[e.token for e in events[i] if isinstance(e, Token)] for i in (0, 1)]
    assert toks[0] == m.generate(prompt, 6, seed=7, **SAMPLING, batch_invariant=True)[0].tolist()
    assert toks[1] == run_jobs_row(m, prompt, 6, 7, 1) != toks[0]


def run_jobs_row(m, prompt, n, seed, row):
    out = []
    sched = Scheduler(m, max_batch=2)
    sched.submit([Job(prompt=prompt, max_tokens=n, seed=seed, row=row,
                      on_event=lambda e: out.append(e.token) if isinstance(e, Token) else None, **SAMPLING)])
    sched.start()
    sched.stop(timeout=60)
    return out


# ------------------------------------------------------------------------------------------------
# The HTTP server, in-process
# ------------------------------------------------------------------------------------------------

class LiveServer:
    """uvicorn serving an app in a thread on a free loopback port; always stopped."""

    def __init__(self, app):
        uvicorn = need("uvicorn")
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                   lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture(scope="module")
def live(models):
    need("starlette"), need("prometheus_client")
    from gpt2_common.serve.app import create_app

    servers = {}
    with LiveServer(create_app(models["torch"], "tiny", max_batch=16, max_queue=8)) as t, \
            LiveServer(create_app(models["tf"], "tiny", max_batch=16, max_queue=8)) as f:
        servers.update(torch=t, tf=f)
        yield servers


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_client_streamed_and_not_equal_generate(live, models, backend):
    """The official openai client, with and without stream=True, on both backends: the same text,
    tokens and log-probabilities, and the tokens of generate(seed)."""
    openai = need("openai")
    client = openai.OpenAI(base_url=live[backend].url + "/v1", api_key="none", max_retries=0, timeout=60)
    m = models[backend]
    prompt = "The quick brown fox"
    args = dict(model="tiny", prompt=prompt, max_tokens=10, seed=99, logprobs=2, extra_body={"top_k": 40},
                temperature=0.9, top_p=0.95)
    full = client.completions.create(**args)
    ch = full.choices[0]
    ids = ch.model_extra["token_ids"]
    assert ids == m.generate(m.encoder.encode(prompt), 10, seed=99, **SAMPLING, batch_invariant=True)[0].tolist()[:len(ids)]
    assert ch.text == m.encoder.decode(ids) and full.usage.completion_tokens == len(ids)
    assert len(ch.logprobs.token_logprobs) == len(ids) and all(len(t) == 2 for t in ch.logprobs.top_logprobs)
    text, lps, tids, finish = "", [], [], None
    for chunk in client.completions.create(stream=True, **args):
        c = chunk.choices[0]
        text += c.text
        tids += c.model_extra.get("token_ids") or []
        lps += c.logprobs.token_logprobs if c.logprobs else []
        finish = c.finish_reason or finish
    assert (text, tids, lps, finish) == (ch.text, ids, ch.logprobs.token_logprobs, ch.finish_reason)
    models_list = client.models.list()
    assert [x.id for x in models_list.data] == ["tiny"]


def test_prompt_forms_n_echo_stop(live, models):
    """Prompts as a string, strings, token ids and lists of ids; n choices; echo; stop texts."""
    httpx = need("httpx")
    url = live["torch"].url + "/v1/completions"
    enc = models["torch"].encoder
    ids = enc.encode("Hello world")
    base = {"max_tokens": 5, "seed": 3, "temperature": 0}
    outs = [httpx.post(url, json={**base, "prompt": p}, timeout=60).json() for p in
            ("Hello world", ["Hello world", "Hi"], ids, [ids, enc.encode("Hi")])]
    assert outs[0]["choices"][0]["text"] == outs[1]["choices"][0]["text"] == outs[2]["choices"][0]["text"]
    assert [c["text"] for c in outs[1]["choices"]] == [c["text"] for c in outs[3]["choices"]]
    r = httpx.post(url, json={"prompt": ids, "max_tokens": 4, "n": 3, "seed": 5}, timeout=60).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2] and len({c["text"] for c in r["choices"]}) > 1
    r = httpx.post(url, json={"prompt": "Hello world", "max_tokens": 3, "echo": True, "logprobs": 1,
                              "temperature": 0}, timeout=60).json()
    c = r["choices"][0]
    assert c["text"].startswith("Hello world") and c["logprobs"]["token_logprobs"][0] is None
    assert len(c["logprobs"]["tokens"]) == len(ids) + 3
    r = httpx.post(url, json={"prompt": "Hello world", "max_tokens": 0, "echo": True, "logprobs": 0}, timeout=60)
    assert r.status_code == 200 and len(r.json()["choices"][0]["logprobs"]["token_logprobs"]) == len(ids)
    full = httpx.post(url, json={**base, "prompt": "Hello world", "max_tokens": 12}, timeout=60).json()["choices"][0]
    stop = full["text"][3:6]
    cut = httpx.post(url, json={**base, "prompt": "Hello world", "max_tokens": 12, "stop": [stop]},
                     timeout=60).json()["choices"][0]
    assert cut["text"] == full["text"][:full["text"].index(stop)] and cut["finish_reason"] == "stop"


def test_bad_requests_get_openai_errors_and_no_traceback(live, models, caplog):
    httpx = need("httpx")
    from gpt2_common.serve.app import MAX_BODY

    url = live["torch"].url
    post = lambda body, **kw: httpx.post(url + "/v1/completions", content=body if isinstance(body, (bytes, str))  # noqa: E731
                                         else json.dumps(body), timeout=60, **kw)
    ok = {"prompt": "Hi", "max_tokens": 2}
    cases = [
        (post(b"{not json"), 400, None), (post(b"[1, 2]"), 400, None),
        (post({**ok, "max_tokens": "3"}), 400, "max_tokens"), (post({**ok, "max_tokens": 0}), 400, "max_tokens"),
        (post({**ok, "top_p": 0}), 400, "top_p"), (post({**ok, "top_p": 1.5}), 400, "top_p"),
        (post({**ok, "temperature": -1}), 400, "temperature"), (post({**ok, "prompt": [1, "a"]}), 400, "prompt"),
        (post({**ok, "n": True}), 400, "n"), (post({**ok, "bogus": 1}), 400, "bogus"),
        (post({"max_tokens": 2}), 400, "prompt"), (post({**ok, "stop": [1]}), 400, "stop"),
        (post({**ok, "prompt": [50257]}), 422, "prompt"), (post({**ok, "prompt": [-1]}), 422, "prompt"),
        (post({**ok, "prompt": [1] * 65}), 422, "prompt"), (post({**ok, "max_tokens": 65}), 422, "max_tokens"),
        (post({**ok, "model": "gpt-4"}), 404, "model"),
        (post(b"x" * (MAX_BODY + 1)), 413, None),
        (httpx.get(url + "/v1/nothing", timeout=60), 404, None),
    ]
    for r, status, param in cases:
        assert r.status_code == status, (r.status_code, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["message"]
    assert post(ok).status_code == 200  # the server goes on
    assert not [rec for rec in caplog.records if rec.exc_info or "Traceback" in rec.getMessage()]


def test_api_key_queue_full_metrics_health(models):
    httpx = need("httpx")
    from gpt2_common.serve.app import create_app

    app = create_app(models["torch"], "tiny", max_batch=1, max_queue=1, api_key="sesame")
    with LiveServer(app) as s:
        body = {"prompt": "Hi", "max_tokens": 2}
        assert httpx.post(s.url + "/v1/completions", json=body, timeout=60).status_code == 401
        r = httpx.post(s.url + "/v1/completions", json=body, headers={"Authorization": "Bearer nope"}, timeout=60)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        auth = {"Authorization": "Bearer sesame"}
        assert httpx.post(s.url + "/v1/completions", json=body, headers=auth, timeout=60).status_code == 200
        # more choices than the queue holds: 429 with Retry-After, nothing queued
        r = httpx.post(s.url + "/v1/completions", json={**body, "n": 2}, headers=auth, timeout=60)
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"
        assert httpx.get(s.url + "/health", timeout=60).json()["status"] == "ok"
        text = httpx.get(s.url + "/metrics", timeout=60).text
        for name in ("gpt2_requests_total", "gpt2_completion_tokens_total", "gpt2_queue_length",
                     "gpt2_batch_size_bucket", "gpt2_time_to_first_token_seconds_bucket",
                     "gpt2_inter_token_seconds_bucket", "gpt2_request_seconds_bucket"):
            assert name in text, name
        assert re.search(r'gpt2_requests_total\{path="/v1/completions",status="429"\} 1\.0', text)
        assert re.search(r'gpt2_requests_total\{path="/v1/completions",status="401"\} 2\.0', text)


class SlowModel:
    """The model with each decoding step 20 ms longer (so a stream is surely still running)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def decode_rows(self, tokens, caches):
        time.sleep(0.02)
        return self._model.decode_rows(tokens, caches)


def test_client_leaving_a_stream_frees_its_row(live, models, monkeypatch):
    httpx = need("httpx")
    s = live["torch"]
    sched = s.app.state.server.scheduler
    monkeypatch.setattr(sched, "model", SlowModel(sched.model))
    cancelled = sched.metrics.finished.labels("cancelled")
    before = cancelled._value.get()
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", s.url + "/v1/completions",
                           json={"prompt": [1], "max_tokens": 63, "stream": True, "seed": 1}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 30  # 63 tokens would take > 1.2 s: the row must end as cancelled
    while (cancelled._value.get() == before or sched.running) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched.running == 0 and sched.queued == 0
    assert cancelled._value.get() == before + 1


# ------------------------------------------------------------------------------------------------
# A real gpt2_serve process, SIGTERM; lm-evaluation-harness; the load test
# ------------------------------------------------------------------------------------------------

def start_serve(model_dir, *extra):
    """A real gpt2_serve process (this checkout's code; MKL in its default mode, as users run it)."""
    from gpt2_common.serve.load import start_server

    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return start_server(str(model_dir), "torch", 4, 16, tuple(extra), env=env)


def test_sigterm_finishes_in_flight_requests_then_exits_0(make_model_dir):
    httpx = need("httpx")
    proc, url = start_serve(make_model_dir("tiny", vocab=True))
    try:
        got, errors = [], []

        def stream():
            try:
                with httpx.stream("POST", url + "/v1/completions", timeout=120,
                                  json={"prompt": [1], "max_tokens": 63, "stream": True, "seed": 1}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            got.append(line[6:])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        t = threading.Thread(target=stream)
        t.start()
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert proc.wait(120) == 0
        assert not errors and got[-1] == "[DONE]"
        ids = [i for line in got[:-1] for i in json.loads(line)["choices"][0]["token_ids"]]
        assert len(ids) == 63 and json.loads(got[-2])["choices"][0]["finish_reason"] == "length"
        with pytest.raises(httpx.HTTPError):  # no longer taking requests
            httpx.get(url + "/health", timeout=5)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_load_test_small(live):
    """The load-test tool on the tiny model: nothing lost, every response batch-invariant."""
    need("httpx")
    from gpt2_common.serve.load import load_test

    out = load_test(live["tf"].url, clients=8, requests=12, max_tokens=8, n_ctx=64)
    assert (out["lost"], out["failed"], out["mismatched"]) == (0, 0, 0)
    assert out["concurrent"]["tokens"] == out["sequential"]["tokens"] == 12 * 8


def test_lm_eval_local_completions_equals_gpt2_eval(live, models, tmp_path):
    """lm-evaluation-harness's local-completions against the server on a local task (no
    downloads): its word perplexity and bits per byte equal gpt2_eval's perplexity on the same passages."""
    need("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from gpt2_common.evaluate import perplexity

    passages = ["The cat sat on the mat and looked at the door.", "A short passage about rivers and hills.",
                "Numbers like 42 and 7 appear here, twice: 42, 7."]
    data = tmp_path / "passages.jsonl"
    data.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    (tmp_path / "tiny_passages.yaml").write_text(
        "task: tiny_passages\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: loglikelihood_rolling\n"
        "doc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = simple_evaluate(model="local-completions", tasks=["tiny_passages"],
                          model_args=f"base_url={live['torch'].url}/v1/completions,model=tiny,"
                                     "tokenizer_backend=remote,tokenized_requests=True,max_retries=1,num_concurrent=1",
                          task_manager=TaskManager(include_path=str(tmp_path)), limit=None)
    got = res["results"]["tiny_passages"]
    ref = perplexity(models["torch"], passages, progress=False)
    assert got["word_perplexity,none"] == pytest.approx(ref["word_perplexity"], rel=1e-6)
    assert got["bits_per_byte,none"] == pytest.approx(ref["bits_per_byte"], rel=1e-6)


def test_generate_batch_invariant_takes_one_prompt_without_hooks(models):
    """The invariant step is per prompt: several prompts, or hooks, are refused with one message."""
    from gpt2_common.interface import ModelError

    m = models["torch"]
    with pytest.raises(ModelError, match="one prompt and no hooks"):
        m.generate([[1, 2], [3]], 2, batch_invariant=True)
    with pytest.raises(ModelError, match="one prompt and no hooks"):
        m.generate([1, 2], 2, batch_invariant=True, hooks={"blocks.0.hook_resid_pre": lambda x: x})
