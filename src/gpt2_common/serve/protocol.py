"""The OpenAI completions request, checked: every client mistake becomes an :class:`APIError` with
the HTTP status and OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.

Statuses: 400 for a malformed body (not JSON, not an object, an unknown field, a wrong type, a
value out of range), 401 for a missing or wrong API key, 404 for an unknown model or path, 413 for
a body over the size limit, 422 for a well-formed request this model cannot serve (a token id
outside the vocabulary, a prompt longer than the context, ``max_tokens`` past the context),
429 for a full queue, 503 while shutting down.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

MAX_LOGPROBS = 20
"""Top alternatives per token a request may ask for (OpenAI allows 5)."""
MAX_STOP = 4
"""Stop texts per request (as OpenAI)."""
MAX_N = 16
"""Choices per prompt."""

KNOWN_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed",
                "logprobs", "echo", "stream", "stream_options", "user",
                # accepted at their neutral values only
                "presence_penalty", "frequency_penalty", "best_of", "logit_bias", "suffix"}


class APIError(Exception):
    """A request the server refuses: ``status`` and OpenAI's error fields."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        """OpenAI's error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    """A checked ``POST /v1/completions`` body; ``prompts`` are token lists."""
    prompts: List[List[int]]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    n: int
    stop: List[str]
    seed: Optional[int]
    logprobs: Optional[int]
    echo: bool
    stream: bool
    include_usage: bool
    user: Optional[str]


def parse_json(raw: bytes) -> Dict[str, Any]:
    """The body as a JSON object, else a 400."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}",
                       code="invalid_json")
    return body


def _bad(param: str, message: str, status: int = 400, code: str = "invalid_value") -> APIError:
    return APIError(status, message, param=param, code=code)


def _int(body: Dict[str, Any], name: str, default: Optional[int], lo: Optional[int] = None,
         hi: Optional[int] = None) -> Optional[int]:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(name, f"{name} must be an integer, got {json.dumps(v)}", code="invalid_type")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        where = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise _bad(name, f"{name} must be {where}, got {v}")
    return v


def _number(body: Dict[str, Any], name: str, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(name, f"{name} must be a number, got {json.dumps(v)}", code="invalid_type")
    return float(v)


def _bool(body: Dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(name, f"{name} must be true or false, got {json.dumps(v)}", code="invalid_type")
    return v


def _prompts(value: Any, encode) -> List[List[int]]:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    what = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids"
    if value is None:
        raise _bad("prompt", "prompt is required", code="missing_required_parameter")
    if isinstance(value, str):
        return [encode(value)]
    if not isinstance(value, list) or not value:
        raise _bad("prompt", what + " (non-empty)", code="invalid_type")
    if all(isinstance(x, str) for x in value):
        return [encode(x) for x in value]
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return [list(value)]
    if all(isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
           for x in value):
        return [list(x) for x in value]
    raise _bad("prompt", what, code="invalid_type")


def parse_completion(body: Dict[str, Any], encode, n_ctx: int, n_vocab: int, start_token: int,
                     model_name: str) -> CompletionRequest:
    """Check a completions body against the model (``encode``: text -> token ids); raise :class:`APIError`."""
    for name in body:
        if name not in KNOWN_FIELDS:
            raise _bad(name, f"unrecognized request argument: {name}", code="unknown_parameter")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", f"model must be a string, got {json.dumps(model)}", code="invalid_type")
    if model is not None and model != model_name:
        raise APIError(404, f"the model {model!r} does not exist (this server serves {model_name!r})",
                       param="model", code="model_not_found")
    for name, neutral in (("presence_penalty", 0), ("frequency_penalty", 0), ("best_of", None), ("suffix", None)):
        v = body.get(name)
        if v is not None and v != neutral and not (name == "best_of" and v == body.get("n", 1)):
            raise _bad(name, f"{name} is not supported (only {json.dumps(neutral)})", code="unsupported_parameter")
    if body.get("logit_bias") not in (None, {}):
        raise _bad("logit_bias", "logit_bias is not supported", code="unsupported_parameter")

    echo = _bool(body, "echo")
    stream = _bool(body, "stream")
    max_tokens = _int(body, "max_tokens", 16, 0)
    if max_tokens == 0 and not echo:
        raise _bad("max_tokens", "max_tokens must be >= 1 (0 only with echo, to score the prompt)")
    temperature = _number(body, "temperature", 1.0)
    if not 0.0 <= temperature <= 2.0:
        raise _bad("temperature", f"temperature must be between 0 and 2, got {temperature}")
    top_p = _number(body, "top_p", 1.0)
    if not 0.0 < top_p <= 1.0:
        raise _bad("top_p", f"top_p must be in (0, 1], got {top_p}")
    top_k = _int(body, "top_k", 0, 0)
    n = _int(body, "n", 1, 1, MAX_N)
    seed = _int(body, "seed", None, 0, 2**63 - 1)
    logprobs = _int(body, "logprobs", None, 0, MAX_LOGPROBS)
    stop = body.get("stop")
    if stop is None:
        stops: List[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stops = list(stop)
    else:
        raise _bad("stop", f"stop must be a string or a list of at most {MAX_STOP} strings", code="invalid_type")
    if any(s == "" for s in stops):
        raise _bad("stop", "a stop text must not be empty")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "user must be a string", code="invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "stream_options must be an object", code="invalid_type")
    include_usage = bool((options or {}).get("include_usage", False))

    prompts = _prompts(body.get("prompt"), encode)
    for i, p in enumerate(prompts):
        if not p:  # an empty text: start from <|endoftext|>, as the toolkit's samplers do
            prompts[i] = p = [start_token]
        bad = [t for t in p if not 0 <= t < n_vocab]
        if bad:
            raise _bad("prompt", f"token id {bad[0]} is outside the vocabulary [0, {n_vocab})", 422, "invalid_token")
        if len(p) > n_ctx:
            raise _bad("prompt", f"the prompt has {len(p)} tokens, more than the model's context of {n_ctx}",
                       422, "context_length_exceeded")
        if max_tokens and len(p) + max_tokens - 1 > n_ctx:
            raise _bad("max_tokens", f"the prompt's {len(p)} tokens + max_tokens {max_tokens} pass the model's "
                       f"context of {n_ctx} tokens", 422, "context_length_exceeded")
    return CompletionRequest(prompts, max_tokens, temperature, top_p, top_k, n, stops, seed, logprobs, echo,
                             stream, include_usage, user)


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where the first stop text starts in ``text`` (``len(text)`` if none)."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return cut


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` a stream must hold back: an incomplete UTF-8
    character (U+FFFD) or the start of a stop text."""
    keep = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    if text.endswith("\ufffd"):
        keep = max(keep, len(text) - len(text.rstrip("\ufffd")))
    return keep
