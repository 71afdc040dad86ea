"""The OpenAI-compatible HTTP API: a Starlette app around one :class:`Scheduler`.

    app = create_app(model, model_name="124M", max_batch=16, max_queue=64, api_key=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)   # what gpt2_serve does

Endpoints: ``POST /v1/completions`` (OpenAI's completions: ``prompt`` as a string, strings, token
ids or lists of token ids; ``max_tokens``, ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``,
``logprobs``, ``echo``, ``stream`` (server-sent events ending with ``data: [DONE]``), ``user``, and
``top_k``), ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text), and vLLM's
tokenizer endpoints ``GET /tokenizer_info``, ``POST /tokenize``, ``POST /detokenize`` (which
lm-evaluation-harness's ``local-completions`` uses instead of downloading a tokenizer).

The model runs only in the scheduler's worker thread; a handler queues its jobs and awaits their
events, which the worker hands to the event loop with ``call_soon_threadsafe``. Each choice carries
``token_ids`` (an extension) besides OpenAI's fields. A client that disconnects from a stream has
its rows dropped before the next decoding step.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any, Dict, List, Optional, Tuple

from .metrics import Metrics
from .protocol import APIError, CompletionRequest, first_stop, held_back, parse_completion, parse_json
from .scheduler import Done, Job, PromptScores, QueueFull, Scheduler, ShuttingDown, Token

log = logging.getLogger("gpt2_serve")

MAX_BODY = 2 * 1024 * 1024
"""Largest request body accepted (bytes); a larger one gets 413."""


class Choice:
    """One choice's state while its job runs: tokens, log-probabilities, text sent so far."""

    def __init__(self, index: int, prompt: List[int], req: CompletionRequest) -> None:
        self.index, self.prompt, self.req = index, prompt, req
        self.tokens: List[int] = []
        self.logprobs: List[float] = []
        self.tops: List[Optional[List[Tuple[int, float]]]] = []
        self.prompt_scores: Optional[PromptScores] = None
        self.done: Optional[Done] = None
        self.sent = 0  # characters of the completion text already streamed
        self.first_token_at: Optional[float] = None
        self.last_at = 0.0


class Server:
    """Everything the handlers share: the model's encoder, the scheduler, metrics, settings."""

    def __init__(self, model: Any, model_name: str, max_batch: int = 16, max_queue: int = 64,
                 api_key: Optional[str] = None, max_body: int = MAX_BODY) -> None:
        self.model, self.model_name, self.api_key, self.max_body = model, model_name, api_key, max_body
        self.encoder = model.encoder
        self.n_ctx, self.n_vocab = int(model.hparams.n_ctx), int(model.hparams.n_vocab)
        self.metrics = Metrics()
        self.scheduler = Scheduler(model, max_batch=max_batch, max_queue=max_queue, metrics=self.metrics,
                                   decode=self.encoder.decode)
        self.created = int(time.time())
        self.closing = False

    # ---- text helpers ----
    def encode(self, text: str) -> List[int]:
        """Text -> token ids; ``<|endoftext|>`` in the text is the special token (as OpenAI's
        completions and vLLM's /tokenize read it)."""
        return self.encoder.encode(text, allow_endoftext=True)

    def token_text(self, t: int) -> str:
        return self.encoder.decode([t])

    def top_dict(self, top: Optional[List[Tuple[int, float]]]) -> Optional[Dict[str, float]]:
        if top is None:
            return None
        out: Dict[str, float] = {}
        for t, lp in top:  # two tokens may print alike (partial UTF-8): keep the likelier
            out.setdefault(self.token_text(t), lp)
        return out


def _error_response(e: APIError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(model: Any, model_name: str, max_batch: int = 16, max_queue: int = 64,
               api_key: Optional[str] = None, max_body: int = MAX_BODY):
    """The Starlette application serving ``model`` (see the module docstring). Its lifespan starts
    the scheduler's worker and, at shutdown, lets it finish every queued and running job."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    server = Server(model, model_name, max_batch, max_queue, api_key, max_body)

    def check_key(request: Request) -> None:
        if server.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {server.api_key}".encode()):
            raise APIError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                           type="authentication_error", code="invalid_api_key")

    async def read_json(request: Request) -> Dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > server.max_body:
            raise APIError(413, f"the request body is over {server.max_body} bytes", code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > server.max_body:
                raise APIError(413, f"the request body is over {server.max_body} bytes", code="request_too_large")
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    def endpoint(fn, counted: bool = True):
        """Wrap a handler: API errors become OpenAI error bodies, and every answer is counted."""
        async def handle(request: Request) -> Response:
            try:
                response = await fn(request)
            except APIError as e:
                response = _error_response(e)
            if counted:
                server.metrics.requests.labels(request.url.path, str(response.status_code)).inc()
            return response
        return handle

    async def health(request: Request) -> Response:
        if server.closing:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return JSONResponse({"status": "ok", "model": server.model_name, "backend": model.backend,
                             "queued": server.scheduler.queued, "running": server.scheduler.running})

    async def models(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"object": "list", "data": [{
            "id": server.model_name, "object": "model", "created": server.created, "owned_by": "gpt2-toolkit",
            "max_model_len": server.n_ctx}]})

    async def metrics(request: Request) -> Response:
        server.metrics.set_queue(server.scheduler.queued)
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    async def tokenizer_info(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": None,
                             "model_max_length": server.n_ctx, "tokenizer_class": "GPT2Tokenizer"})

    async def tokenize(request: Request) -> Response:
        check_key(request)
        body = await read_json(request)
        text = body.get("prompt")
        if not isinstance(text, str):
            raise APIError(400, "prompt must be a string", param="prompt", code="invalid_type")
        tokens = server.encode(text)
        return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": server.n_ctx})

    async def detokenize(request: Request) -> Response:
        check_key(request)
        body = await read_json(request)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                   and 0 <= t < server.n_vocab for t in tokens):
            raise APIError(400, f"tokens must be a list of token ids in [0, {server.n_vocab})", param="tokens",
                           code="invalid_type")
        return JSONResponse({"prompt": server.encoder.decode(tokens)})

    async def completions(request: Request) -> Response:
        check_key(request)
        if server.closing:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        body = await read_json(request)
        start = min(50256, server.n_vocab - 1)
        req = parse_completion(body, server.encode, server.n_ctx, server.n_vocab, start, server.model_name)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**63)
        loop = asyncio.get_running_loop()
        events: "asyncio.Queue[Tuple[int, Any]]" = asyncio.Queue()
        choices: List[Choice] = []
        jobs: List[Job] = []
        arrived = time.monotonic()

        def sink(i: int):
            def on_event(ev: Any) -> None:
                try:
                    loop.call_soon_threadsafe(events.put_nowait, (i, ev))
                except RuntimeError:  # the event loop is gone (server stopping)
                    pass
            return on_event

        for p, prompt in enumerate(req.prompts):
            for j in range(req.n):
                i = len(choices)
                choices.append(Choice(i, prompt, req))
                jobs.append(Job(prompt=prompt, max_tokens=req.max_tokens, on_event=sink(i),
                                temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, seed=seed, row=j,
                                logprobs=req.logprobs, score_prompt=req.echo and req.logprobs is not None,
                                stop=req.stop))
        try:
            server.scheduler.submit(jobs)
        except QueueFull as e:
            raise APIError(429, f"the server is busy: {e}; retry later", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise APIError(503, str(e), type="server_error", code="shutting_down") from None
        server.metrics.prompt_tokens.inc(sum(len(c.prompt) for c in choices))
        cid = f"cmpl-{secrets.token_hex(12)}"

        def record(c: Choice, ev: Any) -> None:
            if isinstance(ev, Token):
                now = time.monotonic()
                if c.first_token_at is None:
                    server.metrics.ttft.observe(now - arrived)
                else:
                    server.metrics.token_latency.observe(now - c.last_at)
                c.first_token_at = c.first_token_at or now
                c.last_at = now
                c.tokens.append(ev.token)
                c.logprobs.append(ev.logprob)
                c.tops.append(ev.top)
                server.metrics.completion_tokens.inc()
            elif isinstance(ev, PromptScores):
                c.prompt_scores = ev
            elif isinstance(ev, Done):
                c.done = ev
                server.metrics.request_seconds.observe(time.monotonic() - arrived)

        if not req.stream:
            try:
                while any(c.done is None for c in choices):
                    i, ev = await events.get()
                    record(choices[i], ev)
            finally:
                for job in jobs:
                    job.cancel()
            failed = [c.done for c in choices if c.done.reason == "error"]
            if failed:
                log.error("completion failed: %s", failed[0].message)
                raise APIError(500, f"the model failed: {failed[0].message}", type="server_error", code="internal_error")
            out = [_choice_body(server, c) for c in choices]
            n_new = sum(len(c["token_ids"]) for c in out)
            n_prompt = sum(len(p) for p in req.prompts) * req.n
            return JSONResponse({"id": cid, "object": "text_completion", "created": int(time.time()),
                                 "model": server.model_name, "choices": out, "system_fingerprint": model.backend,
                                 "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new,
                                           "total_tokens": n_prompt + n_new}})

        async def stream():
            created = int(time.time())

            def chunk(c: Choice, text: str, logprobs: Optional[Dict[str, Any]], finish: Optional[str],
                      token_ids: List[int]) -> str:
                body = {"id": cid, "object": "text_completion", "created": created, "model": server.model_name,
                        "choices": [{"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": finish,
                                     "token_ids": token_ids}]}
                return f"data: {json.dumps(body)}\n\n"

            try:
                if req.echo and req.logprobs is None:
                    for c in choices:
                        yield chunk(c, server.encoder.decode(c.prompt), None, None, [])
                while any(c.done is None for c in choices):
                    i, ev = await events.get()
                    c = choices[i]
                    record(c, ev)
                    if isinstance(ev, PromptScores):
                        yield chunk(c, server.encoder.decode(c.prompt), _prompt_logprobs(server, c), None, [])
                    elif isinstance(ev, Token):
                        text = server.encoder.decode(c.tokens)
                        cut = first_stop(text, req.stop)
                        end = cut if cut < len(text) else len(text) - held_back(text, req.stop)
                        delta = text[c.sent:max(end, c.sent)]
                        c.sent = max(end, c.sent)
                        lp = None
                        if req.logprobs is not None:
                            lp = {"tokens": [server.token_text(ev.token)], "token_logprobs": [ev.logprob],
                                  "top_logprobs": [server.top_dict(ev.top)] if req.logprobs else [None],
                                  "text_offset": [len(text) - len(server.token_text(ev.token))]}
                        yield chunk(c, delta, lp, None, [ev.token])
                    elif isinstance(ev, Done):
                        if ev.reason == "error":
                            log.error("completion failed: %s", ev.message)
                            err = {"error": {"message": f"the model failed: {ev.message}", "type": "server_error",
                                             "param": None, "code": "internal_error"}}
                            yield f"data: {json.dumps(err)}\n\n"
                            continue
                        text = server.encoder.decode(c.tokens)
                        end = first_stop(text, req.stop)
                        rest = text[c.sent:end] if end > c.sent else ""
                        c.sent = max(c.sent, end)
                        yield chunk(c, rest, None, _finish(ev), [])
                if req.include_usage:
                    n_new = sum(len(c.tokens) for c in choices)
                    n_prompt = sum(len(c.prompt) for c in choices)
                    usage = {"id": cid, "object": "text_completion", "created": created, "model": server.model_name,
                             "choices": [], "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new,
                                                      "total_tokens": n_prompt + n_new}}
                    yield f"data: {json.dumps(usage)}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # the client went away (or we are done): free the rows before the next step
                for job in jobs:
                    job.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        status = code if code in (404, 405) else 404
        e = APIError(status, f"no route {request.method} {request.url.path}" if status == 404 else
                     f"method {request.method} not allowed on {request.url.path}", code="not_found")
        return _error_response(e)

    @asynccontextmanager
    async def lifespan(app):
        server.scheduler.start()
        log.info("serving %s (%s backend) with max_batch=%d", server.model_name, model.backend, max_batch)
        try:
            yield
        finally:
            server.closing = True
            await asyncio.get_running_loop().run_in_executor(None, server.scheduler.stop)

    routes = [
        Route("/health", endpoint(health, counted=False), methods=["GET"]),
        Route("/metrics", endpoint(metrics, counted=False), methods=["GET"]),
        Route("/v1/models", endpoint(models), methods=["GET"]),
        Route("/v1/completions", endpoint(completions), methods=["POST"]),
        Route("/tokenizer_info", endpoint(tokenizer_info), methods=["GET"]),
        Route("/tokenize", endpoint(tokenize), methods=["POST"]),
        Route("/detokenize", endpoint(detokenize), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.server = server
    return app


def _finish(done: Done) -> str:
    return "stop" if done.reason in ("stop", "cancelled") else "length"


def _prompt_logprobs(server: Server, c: Choice) -> Dict[str, Any]:
    """The logprobs object of the echoed prompt (its first token has none)."""
    ps = c.prompt_scores
    tokens = [server.token_text(t) for t in c.prompt]
    offsets, pos = [], 0
    for s in tokens:
        offsets.append(pos)
        pos += len(s)
    tops: List[Optional[Dict[str, float]]] = [None]
    if ps is not None and ps.top is not None:
        tops += [server.top_dict(t) for t in ps.top]
    else:
        tops += [None] * (len(c.prompt) - 1)
    return {"tokens": tokens, "token_logprobs": [None] + (list(ps.logprobs) if ps else [None] * (len(c.prompt) - 1)),
            "top_logprobs": tops, "text_offset": offsets}


def _choice_body(server: Server, c: Choice) -> Dict[str, Any]:
    """A finished choice as OpenAI's ``choices[i]`` (text cut at the first stop text)."""
    req = c.req
    text = server.encoder.decode(c.tokens)
    cut = first_stop(text, req.stop)
    text = text[:cut]
    pieces = [server.token_text(t) for t in c.tokens]
    n_keep, pos = 0, 0  # tokens that start before the cut
    for s in pieces:
        if pos >= cut and cut < len(server.encoder.decode(c.tokens)):
            break
        pos += len(s)
        n_keep += 1
    prefix = server.encoder.decode(c.prompt) if req.echo else ""
    logprobs = None
    if req.logprobs is not None:
        base = _prompt_logprobs(server, c) if req.echo else {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                                            "text_offset": []}
        offset = len(prefix)
        for k in range(n_keep):
            base["tokens"].append(pieces[k])
            base["token_logprobs"].append(c.logprobs[k])
            base["top_logprobs"].append(server.top_dict(c.tops[k]) if req.logprobs else None)
            base["text_offset"].append(offset)
            offset += len(pieces[k])
        logprobs = base
    return {"index": c.index, "text": prefix + text, "logprobs": logprobs, "finish_reason": _finish(c.done),
            "token_ids": c.tokens[:n_keep]}
