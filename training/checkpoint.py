"""Atomic, checksummed checkpoints with keep-last-K, resumable from the newest valid one.

A checkpoint is two objects in a :class:`~mlplat.training.storage.ByteStore`: the ``torch.save`` payload
``ckpt-<step>.pt`` and, written after it, the manifest ``ckpt-<step>.json`` holding its SHA-256, size and
attempt (:mod:`mlplat.training.lineage`). The manifest is the commit point: a payload without one (writer
killed in between) is ignored; a payload whose checksum does not match its manifest, or a manifest that
names any object but its own step's payload (outside its prefix, say), is skipped with a warning on load.

Pruning never loses committed progress: keep-last-K counts only checkpoints whose payload verifies (written
by this process, or read back and checked), the newest valid one is never deleted, and after a resume the
corrupt checkpoints newer than the one resumed are retired before anything else is written. Writes are
retried on transient store errors (:mod:`mlplat.training.faults`).

The caller's thread serializes (a consistent snapshot of the live tensors); hashing and the write or
upload run in one background thread, so a slow store (S3) does not stall training. At most one write is in
flight; :meth:`CheckpointManager.flush` waits for it and re-raises its error.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from mlplat.training.faults import RetryPolicy, TransientFault, retry_call
from mlplat.training.storage import ByteStore, LocalStore, ObjectMissing

FORMAT_VERSION = 2
_NAME = re.compile(r"^ckpt-(\d{12})\.(pt|json)$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    """What the manifest object records about one checkpoint."""

    step: int
    epoch: int
    sha256: str
    size: int
    payload: str
    created_at: float
    attempt: str | None = None


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back and verified."""

    manifest: Manifest
    state: dict[str, Any]


class CorruptCheckpoint(Exception):
    """A checkpoint whose payload is missing, truncated or does not match its checksum."""


def checkpoint_names(step: int) -> tuple[str, str]:
    """Payload and manifest names for ``step`` (zero-padded so names sort by step)."""
    return f"ckpt-{step:012d}.pt", f"ckpt-{step:012d}.json"


class CheckpointManager:
    """Writes, prunes and loads one attempt's checkpoints in one store.

    ``attempt``: the attempt whose checkpoints this manager writes and reads (manifests of other attempts
    are invisible to it and retired by :meth:`retire_foreign`); None reads every manifest (tools, tests).
    """

    def __init__(
        self, store: ByteStore, keep_last: int = 3, attempt: str | None = None, retry: RetryPolicy | None = None
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.store = store
        self.keep_last = keep_last
        self.attempt = attempt
        self.retry = retry or RetryPolicy()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future[Manifest] | None = None
        self.last_saved_step: int | None = None
        self.save_seconds: list[float] = []
        """Wall time of each save as seen by the training loop (serializing + waiting for the previous write)."""
        self.fault: TransientFault | None = None
        """A write that outlasted the retry budget (the loop stops, and the run exits 75)."""
        self.corrupt_steps: list[int] = []
        """Steps :meth:`load_latest` skipped because they did not verify."""
        self.checked = 0
        """Checkpoints :meth:`load_latest` looked at."""
        self._valid: set[int] = set()
        self._corrupt: set[int] = set()

    def save(self, state: dict[str, Any], step: int, epoch: int, wait: bool = False) -> None:
        """Serialize ``state`` now and write it in the background (``wait``: block until it is durable).

        Serializing here (a consistent snapshot of the live tensors, with the device-to-host copy a GPU
        needs anyway) keeps the GIL-bound work on the training thread; the background thread only hashes
        and does I/O, which release the GIL, so it barely competes with training. A write whose retries
        ran out is recorded in :attr:`fault` (and raised by a waiting save) rather than raised on the next.
        """
        started = time.perf_counter()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._settle()  # one write in flight at most, and in step order
        self._pending = self._writer.submit(self._write, buffer.getvalue(), step, epoch)
        self.last_saved_step = step
        if wait:
            self.flush()
        self.save_seconds.append(time.perf_counter() - started)

    def _settle(self) -> None:
        try:
            self.flush()
        except TransientFault as fault:
            log.error("checkpoint write failed for good: %s", fault)
            self.fault = fault

    def flush(self) -> None:
        """Wait for the write in flight, if any; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)

    def _put(self, name: str, data: bytes) -> None:
        retry_call(lambda: self.store.put(name, data), f"writing checkpoint {self.store.uri}/{name}", self.retry)

    def _write(self, payload: bytes, step: int, epoch: int) -> Manifest:
        payload_name, manifest_name = checkpoint_names(step)
        manifest = Manifest(
            step=step,
            epoch=epoch,
            sha256=hashlib.sha256(payload).hexdigest(),
            size=len(payload),
            payload=payload_name,
            created_at=time.time(),
            attempt=self.attempt,
        )
        self._valid.discard(step)
        self._put(payload_name, payload)
        # The manifest goes last: it is what makes the checkpoint visible to a resuming run.
        self._put(manifest_name, json.dumps({"format": FORMAT_VERSION, **manifest.__dict__}).encode())
        self._valid.add(step)
        self._corrupt.discard(step)
        try:
            self._prune(newest=step)
        except Exception as error:  # a failed clean-up loses nothing: the next prune tries again
            log.warning("pruning checkpoints in %s failed: %s", self.store.uri, error)
        log.debug("checkpoint step %d written to %s (%d bytes)", step, self.store.uri, len(payload))
        return manifest

    def _verifies(self, step: int) -> bool:
        """Whether checkpoint ``step`` reads back intact (cached: each is read at most once per manager)."""
        if step in self._valid:
            return True
        if step in self._corrupt:
            return False
        try:
            self.load(self._read_manifest(checkpoint_names(step)[1]))
        except (CorruptCheckpoint, ObjectMissing, ValueError, TypeError) as error:
            log.warning(
                "checkpoint step %d in %s does not verify (%s); it does not count as kept", step, self.store.uri, error
            )
            self._corrupt.add(step)
            return False
        self._valid.add(step)
        return True

    def _prune(self, newest: int) -> None:
        """Keep the newest ``keep_last`` checkpoints that verify (the newest valid one always); delete the rest
        up to ``newest``, corrupt ones included (they can never be resumed)."""
        names = self.store.list()
        committed = sorted(
            {int(m.group(1)) for n in names if (m := _NAME.match(n)) and m.group(2) == "json"}, reverse=True
        )
        keep: set[int] = set()
        for step in committed:
            if len(keep) >= self.keep_last:
                break
            if step <= newest and self._verifies(step):
                keep.add(step)
        for name in names:
            match = _NAME.match(name)
            # Delete old ones manifest first, so a half-deleted checkpoint reads as absent, not corrupt.
            if match and match.group(2) == "json" and int(match.group(1)) not in keep and int(match.group(1)) < newest:
                self.store.delete(name)
        # Payloads without a manifest older than the newest are a killed writer's leftovers.
        for name in names:
            match = _NAME.match(name)
            if match and match.group(2) == "pt" and int(match.group(1)) not in keep and int(match.group(1)) < newest:
                self.store.delete(name)
        if isinstance(self.store, LocalStore):
            self.store.remove_stale_temp_files()

    def _read_manifest(self, name: str) -> Manifest:
        raw = json.loads(self.store.get(name))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        raw.pop("format", None)
        return Manifest(**raw)

    def _all_manifests(self) -> list[Manifest]:
        found = []
        for name in self.store.list():
            match = _NAME.match(name)
            if not match or match.group(2) != "json":
                continue
            try:
                found.append(self._read_manifest(name))
            except (ObjectMissing, ValueError, TypeError) as error:
                log.warning("checkpoint manifest %s/%s is unreadable (%s); skipping it", self.store.uri, name, error)
        return sorted(found, key=lambda m: m.step, reverse=True)

    def manifests(self) -> list[Manifest]:
        """This attempt's readable manifests, newest first (an unreadable one is logged and left out)."""
        return [m for m in self._all_manifests() if self.attempt is None or m.attempt == self.attempt]

    def _delete_step(self, step: int) -> None:
        payload_name, manifest_name = checkpoint_names(step)
        self.store.delete(manifest_name)  # manifest first: a half-deleted checkpoint reads as absent
        self.store.delete(payload_name)
        self._valid.discard(step)
        self._corrupt.discard(step)

    def retire_foreign(self) -> list[int]:
        """Delete every checkpoint that is not this attempt's (earlier attempts, old formats, unreadable
        manifests, orphan payloads); return their steps. Call once this attempt is committed in attempt.json."""
        if self.attempt is None:
            return []
        names = self.store.list()
        ours = {m.step for m in self.manifests()}
        retired = sorted({int(m.group(1)) for n in names if (m := _NAME.match(n)) and int(m.group(1)) not in ours})
        for step in retired:
            self._delete_step(step)
        if retired:
            log.info("retired %d checkpoint(s) of earlier attempts in %s", len(retired), self.store.uri)
        return retired

    def retire_newer_than(self, step: int) -> list[int]:
        """Delete this attempt's checkpoints after ``step`` (the resumed one): they failed to verify, and the
        resumed run rewrites those steps. Without this, keep-last-K would count them and prune valid ones."""
        newer = sorted(m.step for m in self.manifests() if m.step > step)
        for newer_step in newer:
            self._delete_step(newer_step)
        if newer:
            log.warning("retired corrupt checkpoint(s) at step(s) %s in %s", newer, self.store.uri)
        return newer

    def load(self, manifest: Manifest) -> LoadedCheckpoint:
        """Read one checkpoint and verify size and SHA-256 before unpickling (tensors and plain data only)."""
        expected = checkpoint_names(manifest.step)[0]
        if manifest.payload != expected:
            raise CorruptCheckpoint(
                f"the manifest names payload {manifest.payload!r}, not {expected!r}: a manifest "
                "may only point at its own step's payload, inside its own prefix; refused"
            )
        try:
            payload = self.store.get(manifest.payload)
        except ObjectMissing:
            raise CorruptCheckpoint(f"payload {manifest.payload} is missing") from None
        if len(payload) != manifest.size:
            raise CorruptCheckpoint(f"payload is {len(payload)} bytes, manifest says {manifest.size}")
        digest = hashlib.sha256(payload).hexdigest()
        if digest != manifest.sha256:
            raise CorruptCheckpoint(f"SHA-256 {digest[:12]}... does not match the manifest's {manifest.sha256[:12]}...")
        try:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as error:  # a checksum-valid payload torch cannot read is corrupt all the same
            raise CorruptCheckpoint(f"torch.load failed: {error}") from error
        return LoadedCheckpoint(manifest=manifest, state=state)

    def load_latest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint that verifies; corrupt newer ones are skipped with a warning (and counted in
        :attr:`corrupt_steps`)."""
        for manifest in self.manifests():
            self.checked += 1
            try:
                loaded = self.load(manifest)
            except CorruptCheckpoint as error:
                log.warning(
                    "checkpoint step %d in %s is corrupt (%s); skipping it and trying an older one",
                    manifest.step,
                    self.store.uri,
                    error,
                )
                self.corrupt_steps.append(manifest.step)
                self._corrupt.add(manifest.step)
                continue
            self._valid.add(manifest.step)
            return loaded
        return None
