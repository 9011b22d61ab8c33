"""Atomic, checksummed checkpoints with keep-last-K, resumable from the newest valid one.

A checkpoint is two objects in a :class:`~mlplat.training.storage.ByteStore`: the ``torch.save`` payload
``ckpt-<step>.pt`` and, written after it, the manifest ``ckpt-<step>.json`` holding its SHA-256 and size.
The manifest is the commit point: a payload without one (writer killed in between) is ignored, and a
payload whose checksum does not match its manifest is skipped with a warning on load.

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

from mlplat.training.storage import ByteStore, LocalStore, ObjectMissing

FORMAT_VERSION = 1
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
    """Writes, prunes and loads checkpoints in one store."""

    def __init__(self, store: ByteStore, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.store = store
        self.keep_last = keep_last
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future[Manifest] | None = None
        self.last_saved_step: int | None = None
        self.save_seconds: list[float] = []
        """Wall time of each save as seen by the training loop (serializing + waiting for the previous write)."""

    def save(self, state: dict[str, Any], step: int, epoch: int, wait: bool = False) -> None:
        """Serialize ``state`` now and write it in the background (``wait``: block until it is durable).

        Serializing here (a consistent snapshot of the live tensors, with the device-to-host copy a GPU
        needs anyway) keeps the GIL-bound work on the training thread; the background thread only hashes
        and does I/O, which release the GIL, so it barely competes with training.
        """
        started = time.perf_counter()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.flush()  # one write in flight at most, and in step order
        self._pending = self._writer.submit(self._write, buffer.getvalue(), step, epoch)
        self.last_saved_step = step
        if wait:
            self.flush()
        self.save_seconds.append(time.perf_counter() - started)

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

    def _write(self, payload: bytes, step: int, epoch: int) -> Manifest:
        payload_name, manifest_name = checkpoint_names(step)
        manifest = Manifest(
            step=step, epoch=epoch, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
            payload=payload_name, created_at=time.time(),
        )
        self.store.put(payload_name, payload)
        # The manifest goes last: it is what makes the checkpoint visible to a resuming run.
        self.store.put(manifest_name, json.dumps({"format": FORMAT_VERSION, **manifest.__dict__}).encode())
        self._prune(newest=step)
        log.debug("checkpoint step %d written to %s (%d bytes)", step, self.store.uri, len(payload))
        return manifest

    def _prune(self, newest: int) -> None:
        names = self.store.list()
        committed = sorted({int(m.group(1)) for n in names if (m := _NAME.match(n)) and m.group(2) == "json"})
        keep = set(committed[-self.keep_last:])
        for name in names:
            match = _NAME.match(name)
            if not match:
                continue
            step = int(match.group(1))
            # Delete old ones manifest first, so a half-deleted checkpoint reads as absent, not corrupt;
            # payloads without a manifest older than the newest are a killed writer's leftovers.
            if step not in keep and step <= newest and match.group(2) == "json":
                self.store.delete(name)
        for name in names:
            match = _NAME.match(name)
            if match and match.group(2) == "pt" and int(match.group(1)) not in keep and int(match.group(1)) < newest:
                self.store.delete(name)
        if isinstance(self.store, LocalStore):
            self.store.remove_stale_temp_files()

    def manifests(self) -> list[Manifest]:
        """Readable manifests, newest first (an unreadable one is logged and left out)."""
        found = []
        for name in self.store.list():
            match = _NAME.match(name)
            if not match or match.group(2) != "json":
                continue
            try:
                raw = json.loads(self.store.get(name))
                raw.pop("format", None)
                found.append(Manifest(**raw))
            except (ObjectMissing, ValueError, TypeError) as error:
                log.warning("checkpoint manifest %s/%s is unreadable (%s); skipping it", self.store.uri, name, error)
        return sorted(found, key=lambda m: m.step, reverse=True)

    def load(self, manifest: Manifest) -> LoadedCheckpoint:
        """Read one checkpoint and verify size and SHA-256 before unpickling (tensors and plain data only)."""
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
        """The newest checkpoint that verifies; corrupt newer ones are skipped with a warning."""
        for manifest in self.manifests():
            try:
                return self.load(manifest)
            except CorruptCheckpoint as error:
                log.warning(
                    "checkpoint step %d in %s is corrupt (%s); skipping it and trying an older one",
                    manifest.step, self.store.uri, error,
                )
        return None
