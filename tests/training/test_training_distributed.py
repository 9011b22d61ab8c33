"""DDP under torchrun (2 CPU processes, gloo), and the launcher's mapping of worker exits to exit codes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import mlflow
import pytest
from support.training_helpers import resume_config, start_trainer, stop, wait_for_checkpoint, write_config

from mlplat.training import EXIT_DATA_INVALID, EXIT_GATE_REJECTED, EXIT_PREEMPTED
from mlplat.training.launcher import exit_code_of, torchrun_args


def test_two_process_ddp_survives_sigterm_then_resumes_under_torchrun_and_only_rank_0_registers(
    tmp_path: Path,
) -> None:
    """`mlplat train --nproc-per-node 2` as a pod's main process gets SIGTERM: torchrun forwards it, both
    ranks stop after the same step, rank 0 checkpoints, and the pod exits 75. The retried pod runs plain
    `torchrun --nproc-per-node 2 -m mlplat.training`: both ranks resume from rank 0's checkpoint (sent to
    rank 1 over gloo), finish, and only rank 0 logs, tracks and registers."""
    config = resume_config(tmp_path, "checkpoints")
    config["registry"] = {"model_name": "digits-ddp"}
    path = write_config(tmp_path / "training.yaml", config)
    process = start_trainer(
        ["mlplat.training", "--config", str(path), "--nproc-per-node", "2"], tmp_path / "launcher.log"
    )
    try:
        wait_for_checkpoint(tmp_path / "checkpoints", process, min_step=50)
        code = stop(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = (tmp_path / "launcher.log").read_text()
    assert code == EXIT_PREEMPTED, log
    stopped = {
        line.split("[rank ")[1][0]: int(line.split("checkpointing at step ")[1].split()[0])
        for line in log.splitlines()
        if "SIGTERM received: checkpointing at step" in line
    }
    assert set(stopped) == {"0", "1"} and len(set(stopped.values())) == 1, log
    newest = max(int(p.name[5:17]) for p in (tmp_path / "checkpoints").glob("ckpt-*.json"))
    assert newest == stopped["0"]

    retry_log_path = tmp_path / "torchrun.log"
    retry = start_trainer(
        [
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mlplat.training",
            "--config",
            str(path),
        ],
        retry_log_path,
    )
    assert retry.wait(timeout=240) == 0, retry_log_path.read_text()
    retry_log = retry_log_path.read_text()
    # Each rank sees half of the 1,257 training rows: 629 rows in batches of 8 = 79 steps an epoch.
    assert f"[rank 0] mlplat.training: training: step {newest} of 948" in retry_log
    assert "INFO [rank 1]" not in retry_log, "only rank 0 logs progress"

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert run.info.status == "FINISHED", "the retry continued the preempted run"
    assert run.data.params["world_size"] == "2"
    assert run.data.tags["mlplat.resumed_from_step"] == str(newest)
    assert run.data.tags["mlplat.registered_version"] == "1"
    assert [str(v.version) for v in client.search_model_versions("name='digits-ddp'")] == ["1"]
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert epochs == list(range(79, 949, 79))
    assert max(int(p.name[5:17]) for p in (tmp_path / "checkpoints").glob("ckpt-*.json")) == 948


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([EXIT_PREEMPTED, EXIT_PREEMPTED], EXIT_PREEMPTED),
        ([EXIT_PREEMPTED, -signal.SIGTERM], EXIT_PREEMPTED),
        ([-signal.SIGKILL], EXIT_PREEMPTED),
        ([EXIT_GATE_REJECTED], EXIT_GATE_REJECTED),
        ([EXIT_DATA_INVALID, EXIT_DATA_INVALID], EXIT_DATA_INVALID),
        ([EXIT_PREEMPTED, 1], 1),
        ([-signal.SIGSEGV], 1),
    ],
)
def test_worker_exit_codes_map_to_one_job_exit_code(codes: list[int], expected: int) -> None:
    assert exit_code_of(codes) == expected


def test_launcher_is_standalone_on_one_node_and_takes_the_node_rank_from_an_indexed_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PET_NNODES", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_RDZV_ENDPOINT", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    single = torchrun_args("t.yaml", ["epochs=2"], "2")
    assert single == [
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "mlplat.training",
        "--config",
        "t.yaml",
        "--set=epochs=2",
    ]
    monkeypatch.setenv("PET_NNODES", "3")
    monkeypatch.setenv("PET_MASTER_ADDR", "job-0.training")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    multi = torchrun_args("t.yaml", [], "gpu")
    assert multi[:4] == ["--nproc-per-node", "gpu", "--node-rank", "2"] and "--standalone" not in multi
