"""Input drift: PSI of the served inputs over a rolling window against the model's reference statistics.

The reference statistics (their schema and where they live in a model directory) are the trainer's contract with
the server, :mod:`mlplat.contracts.reference_stats`; the trainer computes them
(:mod:`mlplat.training.reference_stats`).

:class:`DriftMonitor` keeps the last ``window`` rows the model served (a ring buffer, one copy per batch) and,
when Prometheus scrapes, bins each feature with the reference edges and exports the population stability
index ``PSI = sum((p - q) * ln(p / q))`` per feature as ``mlplat_feature_drift_psi{feature=...}``. Rules of
thumb: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a significant shift.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlplat.contracts.reference_stats import ReferenceStats

# Empty bins would make PSI infinite; smoothing with a small share is the usual remedy.
_EPSILON = 1e-4


def population_stability_index(expected: np.ndarray, observed: np.ndarray) -> float:
    """PSI between two bin-share vectors (each summing to 1), smoothed so empty bins stay finite."""
    p = np.clip(np.asarray(observed, dtype=np.float64), _EPSILON, None)
    q = np.clip(np.asarray(expected, dtype=np.float64), _EPSILON, None)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((p - q) * np.log(p / q)))


class DriftMonitor(Collector):
    """A bounded window of served rows and, on each Prometheus scrape, PSI per feature against the reference.

    `observe` (called from the inference thread, once per batch) only copies rows into a ring buffer; the
    binning happens at scrape time, so serving pays almost nothing for drift monitoring.
    """

    def __init__(self, reference: ReferenceStats, window: int) -> None:
        self.reference = reference
        self.window = window
        self._edges = [np.asarray(f.bin_edges) for f in reference.features]
        self._expected = [np.asarray(f.bin_fractions) for f in reference.features]
        self._buffer = np.zeros((window, len(reference.features)), dtype=np.float64)
        self._next = 0
        self._filled = 0
        self._lock = threading.Lock()

    @property
    def n_features(self) -> int:
        """How many features (columns) the reference describes."""
        return len(self.reference.features)

    def observe(self, rows: np.ndarray) -> None:
        """Add served rows (shape [n, n_features]) to the window, dropping the oldest beyond its size."""
        rows = rows[-self.window :]
        n = rows.shape[0]
        with self._lock:
            first = min(n, self.window - self._next)
            self._buffer[self._next : self._next + first] = rows[:first]
            self._buffer[: n - first] = rows[first:]
            self._next = (self._next + n) % self.window
            self._filled = min(self.window, self._filled + n)

    def psi(self) -> dict[str, float]:
        """PSI per feature name over the current window (empty while no rows were served)."""
        with self._lock:
            window = self._buffer[: self._filled].copy()
        if window.shape[0] == 0:
            return {}
        result = {}
        for j, feature in enumerate(self.reference.features):
            bins = np.searchsorted(self._edges[j], window[:, j], side="right")
            observed = np.bincount(bins, minlength=len(self._expected[j])) / window.shape[0]
            result[feature.name] = population_stability_index(self._expected[j], observed)
        return result

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Prometheus collector hook: the window size and the per-feature PSI gauges."""
        rows = GaugeMetricFamily("mlplat_drift_window_rows", "Rows in the rolling window used for drift statistics")
        rows.add_metric([], float(self._filled))
        yield rows
        gauge = GaugeMetricFamily(
            "mlplat_feature_drift_psi",
            "Population stability index of each input feature over the rolling window vs the training reference",
            labels=["feature"],
        )
        for name, value in self.psi().items():
            gauge.add_metric([name], value)
        yield gauge
