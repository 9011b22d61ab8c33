"""The training config: defaults, YAML loading, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.training_helpers import write_config
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.contracts.training_config import ConfigError, load_config, parse_config
from mlplat.training import EXIT_CONFIG_INVALID


def problems_of(raw: object, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "test.yaml", overrides)
    return caught.value.problems


def test_an_empty_config_gets_working_defaults() -> None:
    config = parse_config({})
    assert config.data.source == "digits"
    assert config.model.source == "mlp"
    assert config.checkpoint.every_n_steps == 100
    assert config.registry.alias == "staging"
    assert config.registry.model_name is None


def test_yaml_file_and_overrides_are_applied(tmp_path: Path) -> None:
    path = write_config(tmp_path / "training.yaml", {"epochs": 4, "optimizer": {"lr": 0.01}})
    config = load_config(path, ["optimizer.lr=0.5", "model.hidden_sizes=[8, 4]", "registry.model_name=digits"])
    assert config.epochs == 4
    assert config.optimizer.lr == 0.5
    assert config.model.hidden_sizes == [8, 4]
    assert config.registry.model_name == "digits"


def test_fingerprint_ignores_where_things_are_stored_but_not_what_is_trained() -> None:
    base = parse_config({})
    assert base.fingerprint() == parse_config({"checkpoint": {"uri": "s3://b/p"}}).fingerprint()
    assert base.fingerprint() != parse_config({"optimizer": {"lr": 0.5}}).fingerprint()


def test_unknown_key_is_named() -> None:
    assert problems_of({"optimizer": {"learning_rate": 0.1}}) == [
        "optimizer.learning_rate: unknown key (check the spelling; see mlplat.contracts.training_config for the fields)"
    ]


def test_out_of_range_value_names_field_limit_and_value() -> None:
    (problem,) = problems_of({"optimizer": {"lr": -0.1}})
    assert problem == "optimizer.lr: Input should be greater than 0 (got -0.1)"


def test_wrong_choice_lists_the_allowed_ones() -> None:
    (problem,) = problems_of({"optimizer": {"name": "rmsprop"}})
    assert problem.startswith("optimizer.name:")
    assert "'adamw', 'adam' or 'sgd'" in problem and "'rmsprop'" in problem


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"epochs": 0, "batch_size": "many", "seed": -1})
    assert [p.split(":")[0] for p in problems] == ["seed", "epochs", "batch_size"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"checkpoint": {"uri": "gs://bucket/x"}}, "checkpoint.uri: scheme 'gs' is not supported"),
        ({"checkpoint": {"uri": "s3:///prefix"}}, "checkpoint.uri: s3 URI 's3:///prefix' has no bucket"),
        ({"data": {"source": "my data"}}, "data.source: must be a built-in (digits) or an import path"),
        ({"data": {"val_fraction": 0.45, "test_fraction": 0.45}}, "data: val_fraction + test_fraction must leave"),
        ({"model": {"options": {"width": 3}}}, "model: options are for custom builders"),
        ({"registry": {"alias": "latest"}}, "registry.alias: alias 'latest' is not allowed"),
        ({"registry": {"alias": "v3"}}, "registry.alias: alias 'v3' is not allowed"),
        ({"gate": {"min_accuracy": 1.5}}, "gate.min_accuracy: Input should be less than or equal to 1"),
        ({"gate": {"must_beat_champion": True}}, "gate.must_beat_champion needs registry.model_name"),
        (["not", "a", "mapping"], "the top level must be a mapping of sections, got list"),
    ],
)
def test_invalid_values_are_rejected_with_a_specific_message(raw: object, expected: str) -> None:
    problems = problems_of(raw)
    assert any(expected in p for p in problems), problems


def test_bad_override_syntax_is_rejected() -> None:
    assert problems_of({}, ("epochs",)) == ["override 'epochs': expected key.path=value"]


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_cli_exits_with_config_code_and_names_the_field(tmp_path: Path) -> None:
    path = write_config(tmp_path / "training.yaml", {"optimizer": {"lr": 0}, "epoch": 3})
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert "optimizer.lr: Input should be greater than 0 (got 0)" in result.output
    assert "epoch: unknown key" in result.output


def test_cli_rejects_a_custom_builder_that_cannot_be_imported(tmp_path: Path) -> None:
    path = write_config(tmp_path / "training.yaml", {"data": {"source": "no_such_team_pkg.data:build"}})
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG_INVALID
    assert "data.source: cannot import module 'no_such_team_pkg.data'" in result.output
