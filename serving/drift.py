"""Input drift: reference feature statistics (written at training time) and PSI over a rolling window.

The contract with training
--------------------------
The trainer computes statistics on its training inputs and ships them inside the MLflow model directory as
``reference_stats.json`` (either at the top of the directory, or under ``extra_files/`` when passed with
``mlflow.pytorch.log_model(..., extra_files=[...])``), so that they travel with the model::

    from mlplat.serving.drift import compute_reference_stats

    stats = compute_reference_stats(x_train, feature_names=names)   # x_train: [n_samples, n_features]
    Path(tmp, "reference_stats.json").write_text(stats.model_dump_json())

The file is a :class:`ReferenceStats`::

    {"schema_version": 1, "n_samples": 1797,
     "features": [{"name": "pixel_0", "bin_edges": [0.5, 3.0], "bin_fractions": [0.61, 0.2, 0.19]}, ...]}

``bin_edges`` are the distinct interior deciles of the feature in the training data, sorted; a value ``v``
falls in bin ``i`` = the number of edges ``<= v`` (so there are ``len(bin_edges) + 1`` bins, the outer two
open-ended), and ``bin_fractions[i]`` is the share of training rows in bin ``i``. A constant feature has one
edge. Only 2-D inputs ``[rows, features]`` are monitored.

At serving time
---------------
:class:`DriftMonitor` keeps the last ``window`` rows the model served (a ring buffer, one copy per batch) and,
when Prometheus scrapes, bins each feature with the reference edges and exports the population stability
index ``PSI = sum((p - q) * ln(p / q))`` per feature as ``mlplat_feature_drift_psi{feature=...}``. Rules of
thumb: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a significant shift.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, model_validator

SCHEMA_VERSION = 1
# Empty bins would make PSI infinite; smoothing with a small share is the usual remedy.
_EPSILON = 1e-4


class FeatureReference(BaseModel):
    """One feature's reference distribution: bin edges from training deciles and the share of rows per bin."""

    name: str = Field(min_length=1)
    bin_edges: list[float] = Field(min_length=1, description="Sorted, distinct interior edges.")
    bin_fractions: list[float] = Field(min_length=2, description="Share of training rows per bin; sums to 1.")

    @model_validator(mode="after")
    def _check_bins(self) -> FeatureReference:
        edges, fractions = self.bin_edges, self.bin_fractions
        if len(fractions) != len(edges) + 1:
            raise ValueError(
                f"feature {self.name!r}: {len(edges)} bin_edges need {len(edges) + 1} bin_fractions, "
                f"got {len(fractions)}"
            )
        if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"feature {self.name!r}: bin_edges must be finite and strictly increasing")
        if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise ValueError(f"feature {self.name!r}: bin_fractions must be >= 0 and sum to 1 (sum {sum(fractions)})")
        return self


class ReferenceStats(BaseModel):
    """Reference statistics of a model's training inputs, one entry per input feature (column)."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    n_samples: int = Field(ge=1)
    features: list[FeatureReference] = Field(min_length=1)


def compute_reference_stats(
    x: np.ndarray, feature_names: Sequence[str] | None = None, n_bins: int = 10
) -> ReferenceStats:
    """Reference statistics of training inputs `x` (shape [n_samples, n_features], finite numbers).

    Bin edges are the feature's distinct interior quantiles (deciles by default); fractions are measured on
    `x` itself with the same binning the server uses, so a window drawn from the training data scores ~0.
    """
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"x must be a 2-D array [n_samples, n_features] with at least one row, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("x contains NaN or infinite values; reference statistics need finite inputs")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    names = list(feature_names) if feature_names is not None else [f"feature_{i}" for i in range(data.shape[1])]
    if len(names) != data.shape[1]:
        raise ValueError(f"{len(names)} feature_names for {data.shape[1]} features")
    quantiles = np.quantile(data, np.linspace(0, 1, n_bins + 1)[1:-1], axis=0)
    features = []
    for j, name in enumerate(names):
        edges = np.unique(quantiles[:, j])
        counts = np.bincount(np.searchsorted(edges, data[:, j], side="right"), minlength=len(edges) + 1)
        features.append(
            FeatureReference(name=name, bin_edges=edges.tolist(), bin_fractions=(counts / counts.sum()).tolist())
        )
    return ReferenceStats(n_samples=int(data.shape[0]), features=features)


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
