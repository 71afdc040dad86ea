"""The server's Prometheus metrics (``GET /metrics``), in a registry of their own."""
from __future__ import annotations

from typing import Tuple


class Metrics:
    """Requests by path and status, prompt and generated tokens, queue length, running rows, rows
    per decoding step, step time, time to first token, time between tokens, request time."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        lat = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
        self.requests = Counter("gpt2_requests", "HTTP requests answered, by path and status", ["path", "status"], registry=r)
        self.prompt_tokens = Counter("gpt2_prompt_tokens", "Prompt tokens received (all choices)", registry=r)
        self.completion_tokens = Counter("gpt2_completion_tokens", "Tokens generated", registry=r)
        self.finished = Counter("gpt2_finished", "Choices ended, by reason (length, stop, cancelled, error)",
                                ["reason"], registry=r)
        self.queue = Gauge("gpt2_queue_length", "Jobs waiting for a row", registry=r)
        self.rows = Gauge("gpt2_running_rows", "Rows in the last decoding step", registry=r)
        self.batch = Histogram("gpt2_batch_size", "Rows per decoding step", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        self.step = Histogram("gpt2_step_seconds", "Time of one decoding step", registry=r, buckets=lat)
        self.ttft = Histogram("gpt2_time_to_first_token_seconds", "Request arrival to its first token",
                              registry=r, buckets=lat)
        self.token_latency = Histogram("gpt2_inter_token_seconds", "Time between a choice's tokens",
                                       registry=r, buckets=lat)
        self.request_seconds = Histogram("gpt2_request_seconds", "Request arrival to a choice's end",
                                         registry=r, buckets=lat)

    def set_queue(self, n: int) -> None:
        """The number of queued jobs now."""
        self.queue.set(n)

    def observe_step(self, rows: int, seconds: float) -> None:
        """One decoding step of ``rows`` rows took ``seconds``."""
        self.rows.set(rows)
        self.batch.observe(rows)
        self.step.observe(seconds)

    def observe_done(self, reason: str) -> None:
        """A choice ended for ``reason``."""
        self.finished.labels(reason).inc()

    def render(self) -> Tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
