"""Reference statistics of the training inputs, shipped with the model for the server's drift monitor
(the schema is :mod:`mlplat.contracts.reference_stats`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlplat.contracts.reference_stats import FeatureReference, ReferenceStats


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
