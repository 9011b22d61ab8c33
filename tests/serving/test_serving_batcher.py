"""The dynamic batcher on its own: a real torch model, a real event loop and worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from support.serving import forward, make_mlp, training_inputs

from mlplat.serving.batcher import (
    BatcherStopped,
    ClientDisconnected,
    DynamicBatcher,
    QueueFull,
    RequestTimedOut,
)


def torch_predict(module: torch.nn.Module, batches: list[int]):
    def predict(x: np.ndarray) -> np.ndarray:
        batches.append(len(x))
        return forward(module, x)

    return predict


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows() -> None:
    module, batches = make_mlp(), []
    rows = training_inputs(64)

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(torch_predict(module, batches), max_batch_size=16)
        batcher.start(asyncio.get_running_loop())
        # Requests of 1 to 3 rows, all submitted in one loop iteration.
        sizes = [1 + i % 3 for i in range(32)]
        starts = np.cumsum([0, *sizes[:-1]])
        futures = [batcher.submit(rows[s : s + n]) for s, n in zip(starts, sizes, strict=True)]
        results = await asyncio.gather(*futures)
        await batcher.drain(5)
        return [np.concatenate(results), rows[: sum(sizes)]]

    answers, inputs = asyncio.run(scenario())
    # Every caller got exactly its own rows' outputs, in order (tight tolerance: BLAS kernels differ by batch size).
    np.testing.assert_allclose(answers, forward(module, inputs), rtol=1e-5, atol=1e-6)
    assert sum(batches) == len(inputs)
    assert max(batches) <= 16
    assert len(batches) < 32 / 2, f"requests were not batched: {batches}"


def test_a_lone_request_runs_at_once_without_waiting_for_a_window() -> None:
    module, batches = make_mlp(), []

    async def scenario() -> float:
        batcher = DynamicBatcher(torch_predict(module, batches), max_batch_size=32)
        batcher.start(asyncio.get_running_loop())
        started = time.perf_counter()
        await batcher.submit(training_inputs(1))
        elapsed = time.perf_counter() - started
        await batcher.drain(5)
        return elapsed

    assert asyncio.run(scenario()) < 0.5
    assert batches == [1]


def test_a_batch_window_gathers_requests_that_arrive_within_it() -> None:
    module, batches = make_mlp(), []

    async def scenario() -> None:
        batcher = DynamicBatcher(torch_predict(module, batches), max_batch_size=8, max_delay_s=0.2)
        batcher.start(asyncio.get_running_loop())
        first = batcher.submit(training_inputs(1))
        await asyncio.sleep(0.05)  # a later arrival, inside the window
        second = batcher.submit(training_inputs(1, seed=1))
        await asyncio.gather(first, second)
        await batcher.drain(5)

    asyncio.run(scenario())
    assert batches == [2]


def test_a_full_queue_refuses_new_requests() -> None:
    release = threading.Event()

    def blocked(x: np.ndarray) -> np.ndarray:
        release.wait(10)
        return x

    async def scenario() -> None:
        batcher = DynamicBatcher(blocked, max_batch_size=1, queue_limit=2)
        batcher.start(asyncio.get_running_loop())
        running = batcher.submit(np.zeros((1, 2), np.float32))
        await asyncio.sleep(0.05)  # the first request is now on the worker
        waiting = [batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(2)]
        with pytest.raises(QueueFull, match="2 requests are already waiting"):
            batcher.submit(np.zeros((1, 2), np.float32))
        assert batcher.depth == 2
        release.set()
        await asyncio.gather(running, *waiting)
        await batcher.drain(5)

    asyncio.run(scenario())


def test_requests_abandoned_before_their_batch_cost_no_compute() -> None:
    release = threading.Event()
    seen: list[float] = []
    skipped: list[str] = []

    def predict(x: np.ndarray) -> np.ndarray:
        release.wait(10)
        seen.extend(x[:, 0].tolist())
        return x

    async def scenario() -> np.ndarray:
        batcher = DynamicBatcher(predict, max_batch_size=8, on_skip=skipped.append)
        batcher.start(asyncio.get_running_loop())
        first = batcher.submit(np.full((1, 1), 1.0, np.float32))
        await asyncio.sleep(0.05)
        timed_out = batcher.submit(np.full((1, 1), 2.0, np.float32))
        gone = batcher.submit(np.full((1, 1), 3.0, np.float32))
        kept = batcher.submit(np.full((1, 1), 4.0, np.float32))
        timed_out.set_exception(RequestTimedOut())
        gone.set_exception(ClientDisconnected())
        for future in (timed_out, gone):
            future.exception()  # retrieved: the caller saw it
        release.set()
        await first
        result = await kept
        await batcher.drain(5)
        return result

    assert asyncio.run(scenario()).tolist() == [[4.0]]
    assert seen == [1.0, 4.0]
    assert sorted(skipped) == ["disconnect", "timeout"]


def test_a_request_that_breaks_the_model_fails_alone() -> None:
    def predict(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ValueError("negative input")
        return x * 10

    async def scenario() -> tuple[list[object], list[int]]:
        batcher = DynamicBatcher(predict, max_batch_size=8)
        batcher.start(asyncio.get_running_loop())
        futures = [batcher.submit(np.array([[v]], np.float32)) for v in (1.0, -1.0, 2.0)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.drain(5)
        return list(results), []

    results, _ = asyncio.run(scenario())
    assert results[0].tolist() == [[10.0]]  # type: ignore[union-attr]
    assert isinstance(results[1], ValueError)
    assert results[2].tolist() == [[20.0]]  # type: ignore[union-attr]


def test_drain_finishes_queued_requests_then_refuses_new_ones() -> None:
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return x + 1

    async def scenario() -> None:
        batcher = DynamicBatcher(slow, max_batch_size=1)
        batcher.start(asyncio.get_running_loop())
        futures = [batcher.submit(np.array([[float(i)]], np.float32)) for i in range(5)]
        await batcher.drain(10)
        assert [f.result().item() for f in futures] == [1.0, 2.0, 3.0, 4.0, 5.0]
        with pytest.raises(BatcherStopped):
            batcher.submit(np.zeros((1, 1), np.float32))

    asyncio.run(scenario())


def test_without_overlap_the_finished_batch_is_answered_before_the_next_starts() -> None:
    """On one CPU the loop and the worker share it: callers get their answers before the next forward."""
    answered: list[int] = []
    seen_at_start: list[int] = []
    release = threading.Event()

    def predict(x: np.ndarray) -> np.ndarray:
        seen_at_start.append(len(answered))
        release.wait(10)
        return x

    async def caller(batcher: DynamicBatcher, i: int) -> None:
        await batcher.submit(np.full((1, 1), float(i), np.float32))
        answered.append(i)

    async def scenario() -> None:
        batcher = DynamicBatcher(predict, max_batch_size=4, overlap=False)
        batcher.start(asyncio.get_running_loop())
        first = [asyncio.create_task(caller(batcher, i)) for i in range(4)]
        await asyncio.sleep(0.05)  # batch one (4 rows) is on the worker
        second = [asyncio.create_task(caller(batcher, i)) for i in range(4, 6)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*first, *second)
        await batcher.drain(5)

    asyncio.run(scenario())
    assert seen_at_start == [0, 4]
