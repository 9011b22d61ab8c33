"""Settings from the environment and the `mlplat serve` command line: values, precedence, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mlplat.cli.app import app as mlplat_cli
from mlplat.contracts import serving_env
from mlplat.serving.settings import ServingSettings, SettingsError, load_settings


def test_settings_come_from_mlplat_serving_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_SERVING_MODEL_URI", "models:/digits@champion")
    monkeypatch.setenv("MLPLAT_SERVING_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("MLPLAT_SERVING_MAX_BATCH_DELAY_MS", "2.5")
    monkeypatch.setenv("MLPLAT_SERVING_QUEUE_LIMIT", "100")
    monkeypatch.setenv("MLPLAT_SERVING_REQUEST_TIMEOUT_S", "1.5")
    monkeypatch.setenv("MLPLAT_SERVING_API_KEY", "hunter2")
    monkeypatch.setenv("MLPLAT_SERVING_LOG_LEVEL", "warning")
    monkeypatch.setenv("MLPLAT_SERVING_CORS_ORIGINS", "https://a.example, https://b.example")
    settings = load_settings()
    assert settings.model_uri == "models:/digits@champion"
    assert (settings.max_batch_size, settings.max_batch_delay_s, settings.queue_limit) == (8, 0.0025, 100)
    assert settings.request_timeout_s == 1.5
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    assert settings.log_level == "warning"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(model_uri="/m")
    assert settings.host == "127.0.0.1"
    assert settings.api_key is None
    assert settings.cors_origins == []
    assert settings.max_batch_delay_ms == 0
    assert not settings.allow_pickle


def test_options_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_SERVING_MODEL_URI", "/from/env")
    monkeypatch.setenv("MLPLAT_SERVING_PORT", "9000")
    settings = load_settings(model_uri="/from/cli", port=None)
    assert settings.model_uri == "/from/cli"
    assert settings.port == 9000


def test_bad_values_name_the_variable_the_value_and_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_SERVING_MODEL_URI", "/m")
    monkeypatch.setenv("MLPLAT_SERVING_MAX_BATCH_SIZE", "0")
    monkeypatch.setenv("MLPLAT_SERVING_DEVICE", "tpu")
    monkeypatch.setenv("MLPLAT_SERVING_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "MLPLAT_SERVING_MAX_BATCH_SIZE: Input should be greater than or equal to 1 (got '0')" in message
    assert (
        "MLPLAT_SERVING_DEVICE: Value error, device must be 'auto', 'cpu', 'cuda' or 'cuda:<n>', not 'tpu'" in message
    )
    assert "MLPLAT_SERVING_LOG_LEVEL: Input should be 'debug', 'info', 'warning' or 'error' (got 'loud')" in message


def test_a_missing_model_uri_is_named() -> None:
    with pytest.raises(SettingsError, match="MLPLAT_SERVING_MODEL_URI: Field required"):
        load_settings()


def test_a_bad_cli_option_is_named_as_an_option() -> None:
    with pytest.raises(SettingsError, match="--queue-limit: Input should be greater than or equal to 1"):
        load_settings(model_uri="/m", queue_limit=0)


def test_serve_is_a_command_of_the_mlplat_cli() -> None:
    result = CliRunner().invoke(mlplat_cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--port", "--max-batch-size", "--max-batch-delay-ms", "--queue-limit", "--device"):
        assert option in result.output


def test_serve_without_a_model_exits_2_with_the_variable_to_set() -> None:
    result = CliRunner().invoke(mlplat_cli, ["serve"])
    assert result.exit_code == 2
    assert "MLPLAT_SERVING_MODEL_URI: Field required" in result.output + result.stderr


def test_serve_with_a_malformed_model_uri_exits_2_saying_why() -> None:
    # A missing model is waited for (tests/serving/test_serving_wait.py); a malformed URI never gets better.
    result = CliRunner().invoke(mlplat_cli, ["serve", "--model", "models:/digits/1/extra", "--log-level", "error"])
    assert result.exit_code == 2
    assert "--model: Value error, a models: URI is models:/<name>@<alias> or models:/<name>/<version>" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_serve_on_a_missing_cuda_device_exits_1_saying_why(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        mlplat_cli, ["serve", "--model", str(tmp_path / "nothing"), "--device", "cuda", "--log-level", "error"]
    )
    assert result.exit_code == 1
    assert "could not load the model" in result.stderr
    assert "CUDA is not available" in result.stderr


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("https://alice:hunter2@models.example/digits", "unsupported URI scheme 'https'"),
        ("gs://bucket/model", "unsupported URI scheme 'gs'"),
        ("models:/", "a models: URI is"),
        ("runs:/abc", "a runs: URI is runs:/<run id>/<artifact path>"),
        ("s3:///key", "an s3: URI is s3://<bucket>/<prefix>"),
    ],
)
def test_malformed_model_uris_fail_the_settings_without_their_credentials(uri: str, rule: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(rule)) as info:
        load_settings(model_uri=uri)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "uri", ["models:/digits@champion", "models:/digits/3", "runs:/abc/model", "s3://b/p", "file:///m", "./m", "/m"]
)
def test_well_formed_model_uris_pass(uri: str) -> None:
    assert load_settings(model_uri=uri).model_uri == uri


def test_load_retry_settings_have_safe_defaults_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(model_uri="/m")
    assert (settings.load_retry_initial_s, settings.load_retry_max_s, settings.load_retry_jitter) == (1.0, 60.0, 0.2)
    monkeypatch.setenv("MLPLAT_SERVING_LOAD_RETRY_INITIAL_S", "10")
    monkeypatch.setenv("MLPLAT_SERVING_LOAD_RETRY_MAX_S", "5")
    with pytest.raises(SettingsError, match="MLPLAT_SERVING_LOAD_RETRY_MAX_S \\(5\\) must be at least"):
        load_settings(model_uri="/m")
    monkeypatch.setenv("MLPLAT_SERVING_LOAD_RETRY_MAX_S", "30")
    monkeypatch.setenv("MLPLAT_SERVING_LOAD_RETRY_JITTER", "1.5")
    with pytest.raises(SettingsError, match="MLPLAT_SERVING_LOAD_RETRY_JITTER: Input should be less than or equal"):
        load_settings(model_uri="/m")


def test_the_contracts_name_every_setting_of_the_server_and_refuse_others() -> None:
    # Components set MLPLAT_SERVING_* through mlplat.contracts.serving_env: the list there is the settings model's.
    assert set(ServingSettings.model_fields) == serving_env.SETTINGS
    assert serving_env.serving_env("keepalive_timeout_s") == "MLPLAT_SERVING_KEEPALIVE_TIMEOUT_S"
    with pytest.raises(KeyError, match="'keep_alive_timeout_s' is not a setting of the model server"):
        serving_env.serving_env("keep_alive_timeout_s")
