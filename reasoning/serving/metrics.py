"""The proxy's Prometheus metrics (``GET /metrics``), each app on a `CollectorRegistry` of its own.

`ProxyMetrics` holds what `reasoning.serving.proxy` counts; ``prometheus_client`` writes the text
format. Every name starts with ``reasoning_proxy_``:

- ``requests_total{strategy, status}``: completion requests, by the strategy's registered name
  (``unknown`` when the request was refused before it named one; a named strategy refused for
  its parameters counts under its name) and the status they ended
  with: the HTTP status, or for a streamed reply the status its error event carries (422, 502,
  503, ...); 499 for a client that went away.
- ``tokens_total{kind, model}``: every finished run's usage (what the responses' ``usage``
  reports), ``kind`` ``prompt``, ``cached`` (prompt tokens the prefix cache served) or
  ``output``, by model (each backend of a model group under its own model's name).
- ``request_seconds{strategy}`` and ``time_to_first_byte_seconds{strategy}``: histograms of a
  request's wall time, and of the time until the first byte of its reply text left (a streamed
  reply: its first content chunk; a reply sent whole: the response).
- ``queue_depth`` (requests waiting for a slot) and ``runs_in_flight`` (runs holding one): gauges.
- ``budget_stops_total{strategy, line}``: runs a budget line stopped or cut (``line`` is the
  stop reason's: ``output_tokens``, ``prompt_tokens``, ``calls`` or ``seconds``).
- ``cancels_total{strategy, reason}``: runs cancelled before they answered: ``client_disconnect``
  (the client went away) or ``server_stopping`` (`reasoning.serving.proxy.stop_runs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from reasoning.record import Run

__all__ = ["CONTENT_TYPE", "SECONDS_BUCKETS", "UNKNOWN", "ProxyMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of the text format ``GET /metrics`` answers with."""

SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Histogram buckets, seconds: a scripted reply's milliseconds up to the proxy's default 600 s cap."""

_KINDS = (("prompt", "prompt_tokens"), ("cached", "cached_tokens"), ("output", "output_tokens"))
"""The token kinds counted, each with its key in a run's usage."""

UNKNOWN = "unknown"
"""The strategy label of a request refused before its strategy was known."""


class ProxyMetrics:
    """One proxy app's metrics, on a registry of its own (tests and several apps never collide)."""

    def __init__(self, *, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        """Create the metrics; the two gauges read `queue_depth` and `in_flight` at each scrape."""
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "reasoning_proxy_requests",
            "Completion requests, by strategy and the status they ended with (499: the client left).",
            ["strategy", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "reasoning_proxy_tokens",
            "Tokens of finished runs (their usage), by kind (prompt, cached, output) and model.",
            ["kind", "model"],
            registry=registry,
        )
        self.latency = Histogram(
            "reasoning_proxy_request_seconds",
            "Wall seconds from a request's arrival to the end of its reply.",
            ["strategy"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            "reasoning_proxy_time_to_first_byte_seconds",
            "Seconds from a request's arrival until the first byte of its reply text was sent.",
            ["strategy"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "reasoning_proxy_queue_depth", "Requests waiting for a slot.", registry=registry
        )
        self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge(
            "reasoning_proxy_runs_in_flight", "Runs solving now (holding a slot).", registry=registry
        )
        self.in_flight.set_function(in_flight)
        self.budget_stops = Counter(
            "reasoning_proxy_budget_stops",
            "Runs a budget line stopped or cut, by strategy and budget line.",
            ["strategy", "line"],
            registry=registry,
        )
        self.cancels = Counter(
            "reasoning_proxy_cancels",
            "Runs cancelled before they answered: client_disconnect or server_stopping.",
            ["strategy", "reason"],
            registry=registry,
        )

    def run(self, strategy: str, run: Run, models: Mapping[str, str], model: str) -> None:
        """Count a finished run: its tokens by model, and its budget stop if a budget line stopped it.

        Args:
            strategy: The strategy's label.
            run: The run.
            models: The model of each named backend (a group's run spends on several).
            model: The model of a run on one backend.
        """
        spent = run.usage_by_backend.items() if run.usage_by_backend else [("", run.usage)]
        for name, usage in spent:
            label = models.get(name, name) if name else model
            for kind, key in _KINDS:
                self.tokens.labels(kind, label).inc(int(usage.get(key, 0)))
        if run.stop_reason.startswith("budget:"):
            self.budget_stops.labels(strategy, run.stop_reason.removeprefix("budget:")).inc()

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
