"""The MLflow auth bootstrap (the Tracking pod's init container): it converges, and refuses what would open MLflow.

The full path (PostgreSQL, the rendered pod, a real server and each identity) is tests/integration/
test_tracking_auth.py; these run the script's functions against a SQLite auth store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlplat.components import mlflow_auth_bootstrap as bootstrap
from mlplat.components.tracking import auth_config_ini

ADMIN_PASSWORD = "admin-password-0123456789"


@pytest.fixture
def auth_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An auth config (as the component renders it) over a SQLite database; returns the database URI."""
    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    config = tmp_path / "basic_auth.ini"
    config.write_text(auth_config_ini(uri, "admin", 0))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    return uri


def plan(**passwords: str) -> bootstrap.Plan:
    return bootstrap.Plan(
        writers=["trainer", "pipeline"],
        readers=["serving"],
        passwords={
            "trainer": "trainer-password-01",
            "pipeline": "pipeline-password-01",
            "serving": "serving-password-01",
            **passwords,
        },
    )


def test_the_bootstrap_converges_on_the_secrets_every_time(auth_store: str) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    first = bootstrap.bootstrap(plan(), None)
    assert first[:4] == [
        "admin admin: created",
        "user trainer: created",
        "user pipeline: created",
        "user serving: created",
    ]
    assert bootstrap.bootstrap(plan(), None)[:4] == [
        "admin admin: unchanged",
        "user trainer: unchanged",
        "user pipeline: unchanged",
        "user serving: unchanged",
    ]
    store = SqlAlchemyStore()
    store.init_db(auth_store)
    store.update_user("serving", is_admin=True)  # someone made the reader an admin
    store.grant_user_permission("serving", "registered_model", "*", "MANAGE")  # and gave it the registry
    done = bootstrap.bootstrap(plan(trainer="rotated-password-02"), None)  # and the trainer's Secret changed
    assert "user trainer: updated password" in done and "user serving: updated is_admin" in done
    assert "reader serving: revoked registered_model *" in done
    assert store.authenticate_user("trainer", "rotated-password-02")
    assert not store.authenticate_user("trainer", "trainer-password-01")
    assert store.get_user("admin").is_admin and not store.get_user("serving").is_admin
    for writer in ("trainer", "pipeline"):
        grants = {
            (g.resource_type, g.resource_pattern, g.permission)
            for g in store.list_grants(store.get_user(writer).id, "default", {"experiment", "registered_model"})
        }
        assert grants == {("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")}
    assert not store.list_grants(store.get_user("serving").id, "default", {"experiment", "registered_model"})


def test_a_default_permission_that_lets_everyone_write_is_refused(auth_store: str, tmp_path: Path) -> None:
    config = tmp_path / "basic_auth.ini"
    config.write_text(config.read_text().replace("default_permission = READ", "default_permission = EDIT"))
    with pytest.raises(
        bootstrap.BootstrapError,
        match=r"default_permission = EDIT in .*basic_auth\.ini lets every "
        r"authenticated identity write; .*READ, NO_PERMISSIONS",
    ):
        bootstrap.bootstrap(plan(), None)


def test_a_user_named_twice_or_a_missing_admin_password_is_refused(
    auth_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twice = bootstrap.Plan(writers=["trainer"], readers=["trainer"], passwords={"trainer": "trainer-password-01"})
    with pytest.raises(bootstrap.BootstrapError, match=r"\['trainer'\] are named more than once"):
        bootstrap.bootstrap(twice, None)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD")
    with pytest.raises(bootstrap.BootstrapError, match=r"needs a username .* and a password"):
        bootstrap.bootstrap(plan(), None)
    with pytest.raises(bootstrap.BootstrapError, match=r"MLFLOW_BACKEND_STORE_URI is not set"):
        monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        bootstrap.bootstrap(bootstrap.Plan(**{**plan().__dict__, "models": ["digits"]}), None)


def test_password_files_missing_or_too_short_are_named(tmp_path: Path) -> None:
    (tmp_path / "trainer").write_text("trainer-password-01\n")
    assert bootstrap.read_passwords(tmp_path, ["trainer"]) == {"trainer": "trainer-password-01"}
    with pytest.raises(bootstrap.BootstrapError, match=r"no password for MLflow user 'serving': .*serving does not"):
        bootstrap.read_passwords(tmp_path, ["trainer", "serving"])
    (tmp_path / "serving").write_text("short")
    with pytest.raises(bootstrap.BootstrapError, match=r"'serving' .* has 5 characters; MLflow needs at least 12"):
        bootstrap.read_passwords(tmp_path, ["serving"])


def test_main_exits_1_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert bootstrap.main(["--writer=trainer", f"--passwords-dir={tmp_path}"]) == 1
    assert "no password for MLflow user 'trainer'" in caplog.text
    with pytest.raises(SystemExit):
        bootstrap.main(["--reader=serving"])  # no writer: argparse's usage error
