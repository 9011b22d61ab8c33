"""Prometheus metrics of the model server (prometheus-client), in a registry of its own per app.

Exposed at `GET /metrics`:

- ``mlplat_requests_total{route,status}`` and ``mlplat_request_duration_seconds{route}`` (histogram);
- ``mlplat_batch_size`` (rows per forward pass) and ``mlplat_inference_duration_seconds`` (histograms);
- ``mlplat_queue_depth`` (requests waiting), ``mlplat_ready`` (1 when ready for traffic);
- ``mlplat_requests_skipped_total{reason}``: requests dropped before compute (timeout, disconnect);
- ``mlplat_model_load_seconds`` and ``mlplat_model_info{name,version,platform,device}``;
- ``mlplat_model_loaded`` (1 once the model is loaded) and ``mlplat_model_load_attempts_total{outcome}``
  (``success``, ``unavailable``: not there yet or the store unreachable, ``refused``: found but not servable,
  ``error``: anything unexpected) while the server waits for its model;
- ``mlplat_connections_closed_total{reason}``: connections the guard ended (``header_timeout``, ``body_timeout``,
  ``header_too_large``, ``evicted``, ``refused``; :mod:`mlplat.serving.connection`);
- ``mlplat_requests_shed_total{reason}``: requests refused at once with 503 (``deadline``: could not finish in
  time, ``queue_full``);
- ``mlplat_feature_drift_psi{feature}`` and ``mlplat_drift_window_rows`` when the model has reference stats;
- prometheus-client's ``python_gc_collections_total{generation}`` and object counts: the cyclic collector's
  runs, which cost latency and CPU when requests leave garbage or stay referenced longer than they must
  (docs/benchmarks.md reports them per 1,000 requests).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class RequestStats(Collector):
    """``mlplat_requests_total{route,status}`` and ``mlplat_request_duration_seconds{route}``, counted in plain
    dicts and lists and turned into metric families when scraped.

    prometheus-client's counter and histogram take a lock on every update (about 2 us for the two, per request:
    a few percent of a request's cost at full load); these are updated on the event loop only, where the
    requests are answered, so they need none. A scrape copies each dict at once (atomic under the GIL).
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}  # per route: observations per bucket (the last: above every bound)
        self._sums: dict[str, float] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        buckets = self._buckets.get(route)
        if buckets is None:
            buckets = self._buckets[route] = [0] * (len(_LATENCY_BUCKETS) + 1)
            self._sums[route] = 0.0
        buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # a bucket counts values <= its bound
        self._sums[route] += seconds

    def collect(self) -> Iterator[Metric]:
        """The two families, as prometheus-client's own counter and histogram would expose them."""
        requests = CounterMetricFamily(
            "mlplat_requests", "HTTP requests by route and status code", labels=["route", "status"]
        )
        for (route, status), count in sorted(self._counts.copy().items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "mlplat_request_duration_seconds", "Time from request to response", labels=["route"]
        )
        sums = self._sums.copy()
        for route, counts in sorted(self._buckets.copy().items()):
            cumulative, total = [], 0
            for bound, count in zip((*_LATENCY_BUCKETS, float("inf")), list(counts), strict=True):
                total += count
                cumulative.append((_bound_label(bound), total))
            latency.add_metric([route], cumulative, sums.get(route, 0.0))
        yield latency


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class ServingMetrics:
    """The server's metrics. Per-request recording (:class:`RequestStats`) costs well under a microsecond."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = RequestStats()
        r.register(self.requests)
        GCCollector(registry=r)  # read at scrape time (gc.get_stats()): nothing is paid per request
        self.batch_size = Histogram("mlplat_batch_size", "Rows per forward pass", buckets=_BATCH_BUCKETS, registry=r)
        self.inference = Histogram(
            "mlplat_inference_duration_seconds",
            "Time of one batched forward pass",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("mlplat_queue_depth", "Requests waiting for a batch", registry=r)
        self.ready = Gauge(
            "mlplat_ready", "1 when the server takes traffic, 0 while loading or shutting down", registry=r
        )
        self.skipped = Counter(
            "mlplat_requests_skipped",
            "Requests dropped before compute because their caller gave up",
            ["reason"],
            registry=r,
        )
        self.model_load = Gauge(
            "mlplat_model_load_seconds", "Time taken to fetch, load and warm up the model", registry=r
        )
        self.model_info = Info("mlplat_model", "The served model", registry=r)
        self.model_loaded = Gauge(
            "mlplat_model_loaded", "1 once the model is loaded, 0 while the server waits for it", registry=r
        )
        self.load_attempts = Counter(
            "mlplat_model_load_attempts",
            "Attempts to load the model, by outcome (success, unavailable, refused, error)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("success", "unavailable", "refused", "error"):
            self.load_attempts.labels(outcome)  # export zeros, so rate() and alerts see every series from the start
        self.connections_closed = Counter(
            "mlplat_connections_closed",
            "Connections closed by the guard (header_timeout, body_timeout, header_too_large, evicted, refused)",
            ["reason"],
            registry=r,
        )
        self.shed = Counter(
            "mlplat_requests_shed",
            "Requests refused at once with 503 + Retry-After (deadline: could not finish in time; queue_full)",
            ["reason"],
            registry=r,
        )
        # bound once: a storm of refusals pays a label lookup (and its lock) for each otherwise
        self.shed_deadline = self.shed.labels("deadline")
        self.shed_queue_full = self.shed.labels("queue_full")

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request and record its latency (on the event loop)."""
        self.requests.observe(route, status, seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        """Record one forward pass (called on the inference thread)."""
        self.batch_size.observe(rows)
        self.inference.observe(seconds)

    def observe_skip(self, reason: str) -> None:
        """Count a request dropped before compute."""
        self.skipped.labels(reason).inc()

    def connection_closed(self, reason: str) -> None:
        """Count a connection the guard closed."""
        self.connections_closed.labels(reason).inc()

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth at scrape time (nothing is paid per request)."""
        self.queue_depth.set_function(depth)

    def add_collector(self, collector: Collector) -> None:
        """Register an extra collector (the drift monitor)."""
        self.registry.register(collector)

    def render(self) -> bytes:
        """The exposition text for `GET /metrics`."""
        return generate_latest(self.registry)
