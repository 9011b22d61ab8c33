"""Progress display: a bar on a terminal, throttled plain lines in CI and pods, nothing off rank 0."""

from __future__ import annotations

import logging
import sys

import pytest

from mlplat.training.progress import BarProgress, LogProgress, NullProgress, make_progress


def test_the_display_suits_where_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.delenv("CI", raising=False)
    assert isinstance(make_progress(is_main=True), BarProgress)
    monkeypatch.setenv("CI", "true")
    assert isinstance(make_progress(is_main=True), LogProgress)
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert isinstance(make_progress(is_main=True), LogProgress)
    assert isinstance(make_progress(is_main=False), NullProgress)


def test_plain_lines_are_throttled_but_epoch_ends_always_show(caplog: pytest.LogCaptureFixture) -> None:
    progress = LogProgress(min_interval=3600)
    with caplog.at_level(logging.INFO, logger="mlplat.training"):
        progress.start(total_steps=100, initial_step=40)
        for step in range(41, 60):
            progress.update(step, epoch=0, metrics={"train_loss": 1.0 / step})
        progress.epoch_end(0, {"epoch": 1.0, "val_accuracy": 0.5})
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "training: step 40 of 100"
    assert [line for line in lines if line.startswith("step ")] == ["step 41/100 epoch 1 train_loss 0.02439"]
    assert lines[-1] == "epoch 1 done: val_accuracy 0.5"
