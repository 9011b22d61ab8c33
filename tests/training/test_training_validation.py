"""Data validation: each check catches its kind of bad data, and training stops with a readable report."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
from support.training_helpers import write_config

from mlplat.contracts.training_config import DataConfig, DataValidationConfig, parse_config
from mlplat.training import EXIT_DATA_INVALID
from mlplat.training.data import load_data
from mlplat.training.runner import run_training
from mlplat.training.trainer import train
from mlplat.training.validation import DataValidationError, ValidationReport, validate_data


def report_for(source: str, **validation: Any) -> ValidationReport:
    config = DataConfig(source=source, validation=DataValidationConfig(**validation))
    try:
        data = load_data(config, seed=0)
    except DataValidationError as error:
        return error.report
    return validate_data(data, config.validation)


def failed(report: ValidationReport) -> dict[str, str]:
    return {check.name: check.detail for check in report.failures}


def test_digits_pass_every_check() -> None:
    report = report_for("digits")
    assert report.passed, report.render()
    assert [c.name for c in report.checks] == [
        "shapes",
        "dtypes",
        "finite",
        "label_range",
        "class_balance",
        "duplicates",
    ]


def test_nan_and_inf_are_counted_per_split() -> None:
    problems = failed(report_for("support.training_builders:with_nan"))
    assert set(problems) == {"finite"}
    counts = re.findall(r"(\w+): (\d+) NaN and (\d+) inf values", problems["finite"])
    assert counts, problems["finite"]
    assert sum(int(nan) for _, nan, _ in counts) == 1
    assert sum(int(inf) for _, _, inf in counts) == 1


def test_labels_outside_the_declared_classes_are_rejected() -> None:
    problems = failed(report_for("support.training_builders:labels_out_of_range"))
    assert set(problems) == {"label_range"}
    assert problems["label_range"] == "test: 2 labels outside [0, 3) e.g. [-1, 5]"


def test_rows_shared_between_train_and_validation_are_leakage() -> None:
    problems = failed(report_for("support.training_builders:leaky_splits"))
    assert set(problems) == {"duplicates"}
    assert problems["duplicates"].startswith("40 rows shared by train and val, 0 by train and test (allowed 0)")
    assert report_for("support.training_builders:leaky_splits", max_duplicate_rows=40).passed


def test_class_imbalance_beyond_the_limit_is_rejected() -> None:
    problems = failed(report_for("support.training_builders:imbalanced"))
    assert set(problems) == {"class_balance"}
    assert "(limit 10; smallest is class 2)" in problems["class_balance"]
    assert report_for("support.training_builders:imbalanced", max_class_imbalance=50).passed


def test_unsplittable_arrays_are_reported_before_splitting() -> None:
    problems = failed(report_for("support.training_builders:wrong_shapes"))
    assert problems == {
        "shapes": "all: x must be 2-D [rows, features], got shape (100,); all: x has 100 rows but y has 99"
    }


def test_float_labels_are_rejected_as_the_wrong_dtype() -> None:
    problems = failed(report_for("support.training_builders:float_labels"))
    assert problems == {"dtypes": "all: y must hold integer class labels, got float32"}


def test_training_stops_on_bad_data_and_logs_the_report_to_mlflow(
    tmp_path: Path, make_config: Callable[..., dict]
) -> None:
    config = parse_config(make_config(data={"source": "support.training_builders:with_nan"}))
    with pytest.raises(DataValidationError) as caught:
        train(config)
    message = str(caught.value)
    assert message.startswith("data validation of 'support.training_builders:with_nan': FAILED (1 of 6 checks)")
    assert "[FAIL] finite:" in message
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["mlplat.data_validation"] == "failed"
    logged = json.loads(
        Path(client.download_artifacts(run.info.run_id, "data_validation.json", str(tmp_path))).read_text()
    )
    assert [c["name"] for c in logged["checks"] if not c["passed"]] == ["finite"]
    assert not Path("checkpoints").exists(), "nothing may be trained or checkpointed on bad data"


def test_cli_exit_code_for_bad_data(tmp_path: Path, make_config: Callable[..., dict]) -> None:
    path = write_config(tmp_path / "bad.yaml", make_config(data={"source": "support.training_builders:leaky_splits"}))
    assert run_training(path) == EXIT_DATA_INVALID


def test_a_custom_builder_returning_the_wrong_type_is_a_config_error() -> None:
    from mlplat.contracts.training_config import ConfigError

    with pytest.raises(ConfigError, match="returned ndarray; expected"):
        load_data(DataConfig(source="numpy:zeros", options={"shape": 3}), seed=0)
