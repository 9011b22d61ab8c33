"""Checkpoints: atomic writes, checksums, keep-last-K and skipping corrupt ones, locally and on S3 (moto)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch

from mlplat.contracts.training_config import parse_config
from mlplat.training.checkpoint import CheckpointManager, checkpoint_names
from mlplat.training.reproducibility import capture_rng_state
from mlplat.training.storage import ByteStore, LocalStore, S3Store, open_store
from mlplat.training.trainer import train


def state_at(step: int) -> dict[str, Any]:
    torch.manual_seed(step)
    return {"step": step, "model": {"w": torch.randn(4, 3)}, "rng": [capture_rng_state()], "history": [{"a": 1.0}]}


def save_steps(manager: CheckpointManager, steps: list[int]) -> None:
    for step in steps:
        manager.save(state_at(step), step=step, epoch=0)
    manager.flush()


def committed_steps(store: ByteStore) -> list[int]:
    return sorted(int(n[5:17]) for n in store.list() if n.endswith(".json"))


@pytest.fixture
def s3_store(moto_endpoint: str, request: pytest.FixtureRequest) -> S3Store:
    bucket = f"ckpt-{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return S3Store(bucket, "jobs/digits", endpoint_url=moto_endpoint)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ByteStore:
    if request.param == "local":
        return LocalStore(tmp_path / "ckpt")
    s3: S3Store = request.getfixturevalue("s3_store")
    return s3


def test_round_trip_restores_tensors_and_plain_values(store: ByteStore) -> None:
    manager = CheckpointManager(store, keep_last=2)
    save_steps(manager, [10])
    loaded = manager.load_latest()
    assert loaded is not None
    assert loaded.manifest.step == 10
    assert torch.equal(loaded.state["model"]["w"], state_at(10)["model"]["w"])
    assert loaded.state["rng"][0]["torch"] == state_at(10)["rng"][0]["torch"]
    assert loaded.state["history"] == [{"a": 1.0}]
    manager.close()


def test_only_the_last_k_are_kept(store: ByteStore) -> None:
    manager = CheckpointManager(store, keep_last=2)
    save_steps(manager, [5, 10, 15, 20])
    assert committed_steps(store) == [15, 20]
    assert sorted(n for n in store.list() if n.endswith(".pt")) == [checkpoint_names(15)[0], checkpoint_names(20)[0]]
    manager.close()


def test_a_corrupt_newest_checkpoint_is_skipped_with_a_warning(
    store: ByteStore, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(store, keep_last=3)
    save_steps(manager, [5, 10])
    payload_name = checkpoint_names(10)[0]
    data = bytearray(store.get(payload_name))
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    store.put(payload_name, bytes(data))
    with caplog.at_level(logging.WARNING, logger="mlplat.training.checkpoint"):
        loaded = manager.load_latest()
    assert loaded is not None and loaded.manifest.step == 5
    assert "checkpoint step 10" in caplog.text and "does not match the manifest" in caplog.text
    manager.close()


def test_truncated_missing_and_unreadable_checkpoints_are_all_skipped(
    store: ByteStore, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(store, keep_last=5)
    save_steps(manager, [1, 2, 3, 4])
    store.put(checkpoint_names(4)[0], store.get(checkpoint_names(4)[0])[:100])  # truncated upload
    store.delete(checkpoint_names(3)[0])  # payload lost
    store.put(checkpoint_names(2)[1], b"{not json")  # manifest garbage
    with caplog.at_level(logging.WARNING, logger="mlplat.training.checkpoint"):
        loaded = manager.load_latest()
    assert loaded is not None and loaded.manifest.step == 1
    assert "payload is 100 bytes" in caplog.text
    assert "payload ckpt-000000000003.pt is missing" in caplog.text
    assert "ckpt-000000000002.json is unreadable" in caplog.text
    manager.close()


def test_a_payload_without_manifest_is_invisible_and_later_cleaned_up(store: ByteStore) -> None:
    manager = CheckpointManager(store, keep_last=1)
    save_steps(manager, [5])
    store.put(checkpoint_names(7)[0], b"half-written by a killed writer")  # no manifest: never committed
    loaded = manager.load_latest()
    assert loaded is not None and loaded.manifest.step == 5
    save_steps(manager, [9])
    assert store.list() == sorted(checkpoint_names(9))
    manager.close()


def test_local_writes_leave_no_temp_files_and_stale_ones_are_ignored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ckpt")
    stale = tmp_path / "ckpt" / ".ckpt-000000000009.pt.123.abcd.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"partial")
    assert store.list() == []
    manager = CheckpointManager(store, keep_last=2)
    save_steps(manager, [3])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(checkpoint_names(3))
    manifest = json.loads((tmp_path / "ckpt" / checkpoint_names(3)[1]).read_text())
    assert manifest["size"] == (tmp_path / "ckpt" / checkpoint_names(3)[0]).stat().st_size
    manager.close()


def test_s3_endpoint_comes_from_the_environment_when_not_configured(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="env-endpoint")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    store = open_store("s3://env-endpoint/a/b")
    assert isinstance(store, S3Store) and store.prefix == "a/b"
    store.put("x", b"1")
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket="env-endpoint")["Contents"]
    ]
    assert keys == ["a/b/x"]


def test_training_checkpoints_to_s3_and_a_retry_of_the_attempt_resumes_there(
    moto_endpoint: str, make_config: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="training")
    monkeypatch.setenv("MLPLAT_ATTEMPT_ID", "job-uid-1")
    config = parse_config(
        make_config(
            checkpoint={
                "uri": "s3://training/jobs/run-1",
                "s3_endpoint_url": moto_endpoint,
                "every_n_steps": 7,
                "keep_last": 2,
            }
        )
    )
    first = train(config)
    objects = boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket="training")["Contents"]
    names = sorted(o["Key"].rsplit("/", 1)[1] for o in objects)
    previous = (first.final_step - 1) // 7 * 7  # the last every-7-steps checkpoint before the final one
    assert names == sorted([*checkpoint_names(first.final_step), *checkpoint_names(previous), "attempt.json"])
    record = json.loads(
        boto3.client("s3", endpoint_url=moto_endpoint)
        .get_object(Bucket="training", Key="jobs/run-1/attempt.json")["Body"]
        .read()
    )
    assert record["attempt"] == "job-uid-1" and record["status"] == "finished"
    again = train(config)  # a retried pod of the same Job (same attempt id): resumes, trains nothing
    assert again.resumed_from_step == first.final_step
    assert again.history == first.history
    assert again.test_metrics == first.test_metrics
    assert again.run_id == first.run_id, "a resumed job continues its MLflow run"
