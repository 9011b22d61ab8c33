"""Drift monitoring: reference statistics (the trainer's contract), PSI, the rolling window, and the gauges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from support.serving import FEATURES, make_mlp, save_mlflow_model, training_inputs

from mlplat.contracts.reference_stats import FeatureReference, ReferenceStats
from mlplat.serving.drift import DriftMonitor, population_stability_index
from mlplat.training.reference_stats import compute_reference_stats


def test_reference_stats_bin_the_training_data_into_deciles() -> None:
    x = np.random.default_rng(0).normal(size=(1000, 3))
    stats = compute_reference_stats(x, ["a", "b", "c"])
    assert [f.name for f in stats.features] == ["a", "b", "c"]
    assert stats.n_samples == 1000
    for feature in stats.features:
        assert len(feature.bin_edges) == 9
        assert len(feature.bin_fractions) == 10
        np.testing.assert_allclose(feature.bin_fractions, 0.1, atol=0.002)
    # The JSON the trainer writes reads back identically.
    assert ReferenceStats.model_validate_json(stats.model_dump_json()) == stats


def test_a_constant_feature_gets_one_edge() -> None:
    x = np.column_stack([np.zeros(100), np.arange(100)])
    stats = compute_reference_stats(x)
    constant = stats.features[0]
    assert constant.bin_edges == [0.0]
    assert constant.bin_fractions == [0.0, 1.0]
    assert stats.features[1].name == "feature_1"


@pytest.mark.parametrize(
    ("x", "names", "message"),
    [
        (np.zeros(5), None, "2-D array"),
        (np.array([[1.0, np.nan]]), None, "NaN or infinite"),
        (np.zeros((3, 2)), ["only-one"], "1 feature_names for 2 features"),
    ],
)
def test_reference_stats_reject_bad_training_inputs(x: np.ndarray, names: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_reference_stats(x, names)


@pytest.mark.parametrize(
    ("edges", "fractions", "message"),
    [
        ([1.0, 0.0], [0.2, 0.3, 0.5], "strictly increasing"),
        ([0.0], [0.5, 0.2, 0.3], "1 bin_edges need 2 bin_fractions"),
        ([0.0], [0.5, 0.6], "sum to 1"),
    ],
)
def test_malformed_reference_stats_are_rejected_naming_the_feature(
    edges: list[float], fractions: list[float], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        FeatureReference(name="age", bin_edges=edges, bin_fractions=fractions)
    assert "'age'" in str(info.value)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = compute_reference_stats(rng.normal(size=(5000, 2)), ["same", "shifted"])
    monitor = DriftMonitor(reference, window=2000)
    live = rng.normal(size=(2000, 2))
    live[:, 1] += 1.0
    monitor.observe(live)
    psi = monitor.psi()
    assert psi["same"] < 0.02
    assert psi["shifted"] > 0.25
    expected = np.array(reference.features[0].bin_fractions)
    assert population_stability_index(expected, expected) == pytest.approx(0.0, abs=1e-12)


def test_the_window_keeps_only_the_most_recent_rows() -> None:
    rng = np.random.default_rng(1)
    reference = compute_reference_stats(rng.normal(size=(5000, 1)), ["x"])
    monitor = DriftMonitor(reference, window=500)
    for _ in range(3):  # 1500 shifted rows, in batches, then 500 normal ones
        monitor.observe(rng.normal(size=(500, 1)) + 3.0)
    assert monitor.psi()["x"] > 1.0
    for _ in range(50):  # many small batches wrap around the ring buffer
        monitor.observe(rng.normal(size=(10, 1)))
    assert monitor.psi()["x"] < 0.1
    assert next(iter(monitor.collect())).samples[0].value == 500


def test_the_server_exports_per_feature_drift_gauges(serve: Any, tmp_path: Path) -> None:
    model_dir = save_mlflow_model(make_mlp(), tmp_path / "mlp")
    reference = json.loads((model_dir / "extra_files" / "reference_stats.json").read_text())
    assert [f["name"] for f in reference["features"]] == [f"f{i}" for i in range(FEATURES)]
    live_rows = training_inputs(300, seed=11)
    live_rows[:, 0] += 2.5  # feature f0 drifts; the others do not
    with serve(model_uri=str(model_dir), drift_window=300) as live, live.client() as client:
        assert live.metric("mlplat_drift_window_rows") == 0
        for start in range(0, 300, 30):
            response = client.post("/predict", json={"inputs": live_rows[start : start + 30].tolist()})
            assert response.status_code == 200
        assert live.metric("mlplat_drift_window_rows") == 300
        drifted = live.metric("mlplat_feature_drift_psi", feature="f0")
        steady = [live.metric("mlplat_feature_drift_psi", feature=f"f{i}") for i in range(1, FEATURES)]
    assert drifted > 0.5
    assert max(steady) < 0.15
