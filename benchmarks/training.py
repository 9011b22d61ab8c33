"""Trainer overhead vs a bare torch loop, checkpoint save/resume cost, and 2-process DDP vs 1 on CPU.

Run from the repository root:  .venv/bin/python -m benchmarks.training
Writes its section of docs/benchmarks.md. Everything is measured in this one run on this machine:

- throughput: the trainer (checkpoints every 100 steps and at each epoch end, MLflow logging to SQLite every
  10 steps, progress lines), and the trainer checkpointing at epoch ends only, against a bare loop over the
  same model, data, batches, optimizer and per-epoch validation, with nothing else; each round runs all
  three back to back, and an overhead is the median of the per-round ratios;
- checkpoints: what a save costs the training loop (serializing; hash and write are in the background), a
  blocking durable save (serialize + SHA-256 + write + fsync + rename), and a resume read (read + verify +
  unpickle), for this model's weights and AdamW state;
- DDP: `mlplat train --nproc-per-node 2` (gloo, one thread per process) against `--nproc-per-node 1`, as
  whole processes; throughput is the training loop's samples/s as the trainer logs it to MLflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.report import machine_description, write_section

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m benchmarks.training"
ROUNDS = 7
DDP_ROUNDS = 2
DDP_EPOCHS = 4
EPOCHS = 16
BATCH = 32
HIDDEN = [256, 256]
COPIES = 8
DATA = "benchmarks.training:jittered_digits"


def jittered_digits(copies: int = COPIES, noise: float = 0.05, seed: int = 0) -> tuple[Any, Any]:
    """Digits repeated ``copies`` times with a little pixel noise: the same task with epochs ``copies`` times
    longer, so epoch-end work (validation, a checkpoint) weighs what it does in a real job, not 40x more."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    x = np.concatenate([bunch.data / 16.0 + rng.normal(0.0, noise, bunch.data.shape) for _ in range(copies)])
    y = np.tile(bunch.target, copies)
    return x.astype(np.float32), y.astype(np.int64)


def bench_config(root: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """The benchmark's training config (jittered digits, an MLP with two 256-wide layers, batch 32, one thread)."""
    config: dict[str, Any] = {
        "seed": 0,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "data": {"source": DATA},
        "model": {"hidden_sizes": HIDDEN},
        "checkpoint": {"uri": str(root / name / "checkpoints"), "every_n_steps": 100, "keep_last": 3,
                       "resume": False},
        "tracking": {"experiment": "benchmark", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                     "log_every_n_steps": 10},
        "runtime": {"device": "cpu", "num_threads": 1},
    }
    config.update(overrides)
    return config


def bare_loop(config: Any, data: Any) -> tuple[float, int]:
    """The baseline: the same model, optimizer, batches and per-epoch validation, and nothing else."""
    from torch.utils.data import DistributedSampler

    from mlplat.training.gate import evaluate
    from mlplat.training.models import build_model
    from mlplat.training.optim import build_optimizer

    torch.manual_seed(config.seed)
    model = build_model(config.model, data.x_train.shape[1], data.classes)
    optimizer = build_optimizer(config.optimizer, model)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    sampler: DistributedSampler[int] = DistributedSampler(range(len(x)), num_replicas=1, rank=0,  # type: ignore[arg-type]
                                                          seed=config.seed)
    samples = 0
    start = time.perf_counter()
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for indices in torch.tensor(list(sampler)).split(config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x.index_select(0, indices)), y.index_select(0, indices))
            loss.backward()
            optimizer.step()
            samples += len(indices)
        evaluate(model, data.x_val, data.y_val, data.classes, torch.device("cpu"))
    return time.perf_counter() - start, samples


def throughput(root: Path) -> tuple[list[str], dict[str, float]]:
    from mlplat.training.config import parse_config
    from mlplat.training.data import load_data
    from mlplat.training.trainer import train

    config = parse_config(bench_config(root, "warmup", epochs=1))
    data = load_data(config.data, config.seed).as_float32()
    train(config)  # warm imports, MLflow schema, allocator
    bare_loop(config, data)
    config = parse_config(bench_config(root, "bare"))
    variants = {
        "trainer": bench_config(root, "trainer"),
        "epoch-ends": bench_config(root, "epoch-ends", checkpoint={
            "uri": str(root / "epoch-ends" / "checkpoints"), "every_n_steps": None, "resume": False}),
    }
    rates: dict[str, list[float]] = {"bare": [], "trainer": [], "epoch-ends": []}
    ratios: dict[str, list[float]] = {"trainer": [], "epoch-ends": []}
    saves: list[float] = []
    for round_ in range(ROUNDS):
        # Each round runs all loops back to back (order rotating), so a burst of load on the machine hits a
        # round rather than one loop; an overhead is the median of the per-round ratios to the bare loop.
        order = ["bare", "trainer", "epoch-ends"]
        order = order[round_ % 3:] + order[:round_ % 3]
        pair: dict[str, float] = {}
        for which in order:
            if which == "bare":
                seconds, samples = bare_loop(config, data)
                pair[which] = samples / seconds
            else:
                shutil.rmtree(root / which, ignore_errors=True)
                result = train(parse_config(variants[which]))
                pair[which] = result.samples_per_second
                if which == "trainer":
                    saves += result.checkpoint_seconds
        for which, rate in pair.items():
            rates[which].append(rate)
            if which != "bare":
                ratios[which].append(pair["bare"] / rate - 1.0)
    steps = EPOCHS * -(-len(data.x_train) // BATCH)
    overhead = statistics.median(ratios["trainer"])

    def row(label: str, which: str) -> str:
        values = rates[which]
        if which == "bare":
            extra = "baseline | baseline"
        else:
            low, _, high = statistics.quantiles(ratios[which], n=4)
            best = max(rates["bare"]) / max(values) - 1.0
            extra = f"{statistics.median(ratios[which]):+.1%} ({low:+.0%} to {high:+.0%}) | {best:+.1%}"
        return f"| {label} | {statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f} | {extra} |"

    lines = [
        f"digits x{COPIES} with pixel noise ({len(data.x_train):,} training rows, `{DATA}`), "
        f"MLP 64-{'-'.join(map(str, HIDDEN))}-10, AdamW, batch {BATCH}, {EPOCHS} epochs ({steps} steps), "
        f"one CPU thread; {ROUNDS} rounds, each running every loop back to back.",
        "",
        "| loop | samples/s (median) | min | max | overhead: median of per-round ratios (quartiles) | "
        "overhead: best run vs best run |",
        "|---|---:|---:|---:|---:|---:|",
        row("bare torch loop: same batches, optimizer and per-epoch validation", "bare"),
        row(f"mlplat trainer: checkpoints every 100 steps + epoch ends ({steps // 100 + EPOCHS} per run), "
            "MLflow every 10 steps", "trainer"),
        row(f"mlplat trainer: checkpoints at epoch ends only ({EPOCHS} per run), MLflow every 10 steps",
            "epoch-ends"),
        "",
        f"**Trainer overhead: {overhead:+.1%}** with checkpoints every 100 steps and MLflow logging on "
        f"(per round: {', '.join(f'{r:+.0%}' for r in ratios['trainer'])}). Target: <= 10%. A checkpoint goes out "
        f"every ~{1000 * 100 * BATCH / statistics.median(rates['trainer']):.0f} ms of training (a stress setting: "
        "real jobs checkpoint every few minutes); MLflow receives the buffered metrics every 5 s. "
        "The machine is shared, so single runs swing by tens of percent either way; the median over rounds "
        "and the best-vs-best ratio are the robust figures.",
    ]
    return lines, {"overhead": overhead, "loop_save_ms": 1000 * statistics.median(saves)}


def checkpoints(root: Path, loop_save_ms: float) -> list[str]:
    from mlplat.training.checkpoint import CheckpointManager
    from mlplat.training.config import ModelConfig, OptimizerConfig
    from mlplat.training.models import build_model
    from mlplat.training.optim import build_optimizer
    from mlplat.training.reproducibility import capture_rng_state
    from mlplat.training.storage import LocalStore

    model = build_model(ModelConfig(hidden_sizes=HIDDEN), 64, 10)
    optimizer = build_optimizer(OptimizerConfig(), model)
    model(torch.randn(8, 64)).sum().backward()
    optimizer.step()  # materialize AdamW's state
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": [capture_rng_state()]}
    manager = CheckpointManager(LocalStore(root / "ckpt-bench"), keep_last=3)
    save, load = [], []
    for step in range(1, 21):
        start = time.perf_counter()
        manager.save(state, step=step, epoch=0, wait=True)
        save.append(time.perf_counter() - start)
        start = time.perf_counter()
        loaded = manager.load_latest()
        load.append(time.perf_counter() - start)
        assert loaded is not None and loaded.manifest.step == step
    size = loaded.manifest.size
    manager.close()
    return [
        f"Checkpoint of this model: {size / 1e6:.2f} MB (weights, AdamW state, RNG states), local disk; median of 20.",
        "",
        "| operation | median ms |",
        "|---|---:|",
        f"| save as seen by the training loop (serialize; hash and write in the background) | {loop_save_ms:.2f} |",
        f"| save, blocking until durable (serialize, SHA-256, write, fsync, rename, manifest) | "
        f"{1000 * statistics.median(save):.2f} |",
        f"| resume read (list, read, verify SHA-256, unpickle) | {1000 * statistics.median(load):.2f} |",
    ]


def ddp_run(root: Path, name: str, nproc: int, batch: int) -> tuple[float, float]:
    """One whole `mlplat train --nproc-per-node` process: (training samples/s from MLflow, wall seconds)."""
    import mlflow

    config = bench_config(root, name, batch_size=batch, epochs=DDP_EPOCHS,
                          tracking={"experiment": name, "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                                    "log_every_n_steps": 10})
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlplat.training", "--config", str(path), "--nproc-per-node", str(nproc)],
                   cwd=root, check=True, capture_output=True, env={**os.environ, "CI": "1", "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"{name}: the trainer logged no experiment"
    (run,) = client.search_runs([experiment.experiment_id])
    return run.data.metrics["train_samples_per_second"], wall


def ddp(root: Path) -> list[str]:
    rows = [
        f"`mlplat train --nproc-per-node N` (torchrun in-process, gloo over loopback), one thread per process, "
        f"{DDP_EPOCHS} epochs, same data and model as above; batch is per process. Median of {DDP_ROUNDS} runs each, "
        "alternating.",
        "",
        "| batch per process | processes | training samples/s (all ranks) | x 1 process | whole process wall s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for batch in (BATCH, 256):
        runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for round_ in range(DDP_ROUNDS):
            for nproc in (1, 2) if round_ % 2 == 0 else (2, 1):
                runs[nproc].append(ddp_run(root, f"ddp-b{batch}-n{nproc}-r{round_}", nproc, batch))
        one = statistics.median(r[0] for r in runs[1])
        for nproc in (1, 2):
            rate = statistics.median(r[0] for r in runs[nproc])
            wall = statistics.median(r[1] for r in runs[nproc])
            rows.append(f"| {batch} | {nproc} | {rate:,.0f} | {rate / one:.2f} | {wall:.1f} |")
    rows += [
        "",
        "Here two processes do not beat one: every step all-reduces the gradients (~0.3 M parameters, 1.3 MB) "
        "over gloo, and on two shared cores the two trainers and gloo's communication threads compete for the "
        "same CPUs, so there is no idle core to overlap the exchange with. More work per step narrows the gap "
        "(batch 256 vs 32). DDP's payoff is on GPU nodes with NCCL, or CPU nodes with cores to spare; this "
        "measures the cost of the distributed path, not a speed-up. Whole-process wall time includes start-up "
        "(imports, torchrun, the process group).",
    ]
    return rows


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["CI"] = "1"  # plain progress lines, not a bar
    sys.path.insert(0, str(ROOT))  # the data builder is named by import path: benchmarks.training:...
    with tempfile.TemporaryDirectory(prefix="mlplat-bench-training-") as tmp:
        root = Path(tmp)
        cwd = Path.cwd()
        os.chdir(root)  # MLflow's local artifact root (./mlruns) stays in the temp dir
        try:
            throughput_lines, figures = throughput(root)
            checkpoint_lines = checkpoints(root, figures["loop_save_ms"])
            ddp_lines = ddp(root)
        finally:
            os.chdir(cwd)
    markdown = "\n".join([
        "## Trainer (`mlplat train`)",
        "",
        f"Machine: {machine_description()}. Command: `{COMMAND}` (one run; every ratio compares figures "
        "from that run).",
        "",
        "### Throughput: trainer vs a bare torch loop",
        "",
        *throughput_lines,
        "",
        "### Checkpoint save and resume",
        "",
        *checkpoint_lines,
        "",
        "### DDP on CPU: 2 processes vs 1",
        "",
        *ddp_lines,
    ])
    write_section("training", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
