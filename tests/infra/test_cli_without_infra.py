"""The `mlplat` console script in an image without the ``infra`` extra: `mlplat serve` and `mlplat train` run with
the Pulumi SDKs and the IaC package unimportable, and the infrastructure commands name the extra to install.

Each run is a subprocess of `mlplat.cli.app:main` (what the console script calls) behind an import hook that makes
``pulumi*``, ``mlplat.components`` and every ``mlplat.infra`` module but the CLI unimportable, as they are in the
serving and training images, and logs every attempt: a guarded ``try: import pulumi`` would pass unnoticed
otherwise. The clean-virtualenv version (the wheel without the extra) is in tests/packaging.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

BLOCKED_RUN = r"""
import importlib.abc, os, sys

INFRA = {"pulumi", "pulumi_aws", "pulumi_eks", "pulumi_kubernetes", "pulumi_docker", "pulumi_random",
         "pulumi_policy"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        blocked = name.partition(".")[0] in INFRA
        if os.environ["MLPLAT_BLOCK"] == "iac":  # the IaC package too, though an image ships it
            blocked = blocked or name == "mlplat.components" or name.startswith(
                ("mlplat.components.", "mlplat.infra.")) and name != "mlplat.cli.app"
        if not blocked:
            return None
        with open(os.environ["MLPLAT_BLOCKED_LOG"], "a") as log:
            log.write(name + "\n")
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Blocker())
sys.argv = ["mlplat", *sys.argv[1:]]
from mlplat.cli.app import main

main()
"""


def mlplat_without_infra(args: list[str], log: Path, cwd: Path, **env: str) -> subprocess.Popen[str]:
    """`mlplat <args>` behind the hook, in ``cwd``, with ``env`` added to this process's environment.

    ``MLPLAT_BLOCK=iac`` (the default) blocks the SDKs and the IaC modules, ``sdk`` the SDKs only (an image
    without the extra: the mlplat package is whole).
    """
    environment = {
        **os.environ,
        "MLPLAT_BLOCKED_LOG": str(log),
        "MLPLAT_BLOCK": "iac",
        "CI": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-c", BLOCKED_RUN, *args],
        env=environment,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finished(args: list[str], log: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    process = mlplat_without_infra(args, log, log.parent, **env)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def attempted(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize(("command", "option"), [("serve", "--model"), ("train", "--config"), ("promote", "--from")])
def test_help_of_the_image_commands_needs_no_iac(command: str, option: str, tmp_path: Path) -> None:
    log = tmp_path / "blocked.txt"
    done = finished([command, "--help"], log)
    assert done.returncode == 0, done.stderr
    assert option in done.stdout
    assert attempted(log) == []


def test_the_hook_is_live_and_iac_commands_name_the_extra(tmp_path: Path) -> None:
    """The control: with the SDKs blocked, `mlplat synth` stops before importing anything, naming the extra."""
    log = tmp_path / "blocked.txt"
    # find_spec consults the hook too, so the guard sees what an image without the SDKs would show.
    done = finished(["synth", "dev"], log, MLPLAT_BLOCK="sdk")
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "`mlplat synth` needs the Pulumi SDKs" in message and "pip install 'mlplat[infra]'" in message
    assert "Traceback" not in done.stderr
    assert attempted(log) and all(n.startswith("pulumi") for n in attempted(log)), attempted(log)

    # Every infrastructure command, including those that read a saved render.
    render = tmp_path / "render.json"
    render.write_text('{"stack": "dev", "resources": []}')
    for command in (
        ["check", "dev", "--render", str(render)],
        ["cost", "dev", "--render", str(render)],
        ["diff", str(render), str(render)],
        ["runner", "dev"],
        ["images", "dev"],
    ):
        refused = finished(command, tmp_path / f"{command[0]}.txt", MLPLAT_BLOCK="sdk")
        assert refused.returncode == 2, refused.stderr
        assert f"`mlplat {command[0]}` needs the Pulumi SDKs" in " ".join(refused.stderr.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_train_then_serve_run_end_to_end_without_iac(tmp_path: Path) -> None:
    """The image's job for real: `mlplat train` trains, gates and registers digits in MLflow; `mlplat serve` loads
    it by alias, turns ready, answers a prediction and drains on SIGTERM; neither tries to import IaC code."""
    log = tmp_path / "blocked.txt"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seed": 3,
                "epochs": 1,
                "batch_size": 64,
                "model": {"hidden_sizes": [32]},
                "checkpoint": {"uri": str(tmp_path / "checkpoints"), "every_n_steps": 50},
                "tracking": {"experiment": "no-iac", "tracking_uri": tracking},
                "registry": {"model_name": "digits"},
                "runtime": {"device": "cpu", "num_threads": 1},
            }
        )
    )
    trained = finished(["train", "--config", str(config)], log)
    assert trained.returncode == 0, trained.stderr[-4000:]

    port = _free_port()
    server = mlplat_without_infra(
        ["serve", "--model", "models:/digits@staging", "--port", str(port)], log, tmp_path, MLFLOW_TRACKING_URI=tracking
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1][-4000:]
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not turn ready"
            time.sleep(0.3)
        answer = httpx.post(f"{url}/predict", json={"inputs": [[0.0] * 64]}, timeout=30)
        assert answer.status_code == 200, answer.text
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert attempted(log) == []
