"""A running job's checkpoints in object storage: written whole, checked whole, newest wins.

A checkpoint is one object (``shared.keys.checkpoint_key``: its attempt and iteration in the
key, so nothing is ever overwritten)::

    stylequeue-checkpoint/1\\n
    <sha256 hex of everything below>\\n
    <header: one line of JSON>\\n
    <the engine state: np.savez bytes>

The header says whose it is (job id, attempt, iteration and the job's *fingerprint*: a hash of
what the computation depends on, so a checkpoint of other parameters is never resumed), and
what the attempt had streamed and stored by then: the history entries (with their stream
ids) and the snapshot iterations it holds under its own prefix.

Object storage has no rename and a write may be torn (a full disk, a folder store on a
filesystem without atomic rename, a crash mid-upload to something less strict than S3), so
the reader trusts nothing it has not checked: magic, checksum, header, fingerprint, the key
agreeing with the header, and the state's own consistency. Anything else is skipped (and
logged), and the next older checkpoint tried. Checkpoints are ordered by (attempt,
iteration): a stale attempt (presumed dead, still running) writing late can only add an
*older* one, which the live attempt's next write removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stylequeue.shared import keys
from stylequeue.shared.storage import Storage
from stylequeue.worker.engine.state import EngineState, StateError

log = logging.getLogger("stylequeue.worker")

MAGIC = b"stylequeue-checkpoint/1\n"
FORMAT = 1


class CheckpointInvalid(ValueError):
    """Not a checkpoint of this job and these parameters, or a damaged one."""


def fingerprint(
    job_id: str, params: Mapping[str, Any], inputs: Mapping[str, Any], weights: str
) -> str:
    """What a checkpoint must match to be resumed: the job, its stored parameters and inputs
    and the weights (precision is the worker's; on another precision a resume still works,
    it is only no longer bit-identical)."""
    doc = {"format": FORMAT, "job": job_id, "params": params, "inputs": inputs, "weights": weights}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Checkpoint:
    job_id: str
    attempt: int  # the attempt that wrote it
    fingerprint: str
    state: EngineState
    history: list[dict[str, Any]]  # entries 1..state.iteration, as streamed (ids included)
    snapshots: list[int]  # snapshot iterations held under the writing attempt's prefix
    iterations_computed: int  # by all attempts until then (more than iteration if any died)

    @property
    def iteration(self) -> int:
        return self.state.iteration

    def encode(self) -> bytes:
        header = {
            "format": FORMAT,
            "job_id": self.job_id,
            "attempt": self.attempt,
            "iteration": self.iteration,
            "fingerprint": self.fingerprint,
            "history": self.history,
            "snapshots": self.snapshots,
            "iterations_computed": self.iterations_computed,
        }
        body = json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.state.to_bytes()
        return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body

    @classmethod
    def decode(cls, data: bytes, *, job_id: str, fingerprint: str) -> Checkpoint:
        """The checkpoint in ``data``, checked; :class:`CheckpointInvalid` otherwise."""
        if not data.startswith(MAGIC):
            raise CheckpointInvalid("not a checkpoint (no magic line)")
        digest, _, body = data[len(MAGIC) :].partition(b"\n")
        if hashlib.sha256(body).hexdigest().encode() != digest:
            raise CheckpointInvalid("checksum mismatch (torn or damaged write)")
        raw_header, _, payload = body.partition(b"\n")
        try:
            header = json.loads(raw_header)
            state = EngineState.from_bytes(payload)
            ckpt = cls(
                job_id=str(header["job_id"]),
                attempt=int(header["attempt"]),
                fingerprint=str(header["fingerprint"]),
                state=state,
                history=list(header["history"]),
                snapshots=[int(i) for i in header["snapshots"]],
                iterations_computed=int(header["iterations_computed"]),
            )
            iteration = int(header["iteration"])
        except (StateError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointInvalid(f"unreadable: {exc}") from exc
        if header.get("format") != FORMAT:
            raise CheckpointInvalid(f"format {header.get('format')!r}")
        if ckpt.job_id != job_id or ckpt.fingerprint != fingerprint:
            raise CheckpointInvalid("another job's, or other parameters'")
        if iteration != state.iteration:
            raise CheckpointInvalid(f"header says {iteration}, state {state.iteration}")
        its = [e.get("iteration") for e in ckpt.history if isinstance(e, dict)]
        if its != list(range(1, iteration + 1)):
            raise CheckpointInvalid("its history is not iterations 1 to its iteration")
        return ckpt


class CheckpointStore:
    """One job's checkpoints in ``storage``."""

    def __init__(self, storage: Storage, job_id: str) -> None:
        self.storage = storage
        self.job_id = job_id

    def _listed(self) -> list[tuple[tuple[int, int], str]]:
        """((attempt, iteration), key), newest first."""
        found = []
        for key in self.storage.list(keys.checkpoint_prefix(self.job_id)):
            order = keys.parse_checkpoint_key(self.job_id, key)
            if order is not None:
                found.append((order, key))
        return sorted(found, reverse=True)

    def save(self, ckpt: Checkpoint) -> str:
        """Write ``ckpt`` under its own key, then remove the older ones (the new one is whole
        by then: a crash in between leaves more checkpoints, never fewer valid ones)."""
        key = keys.checkpoint_key(self.job_id, attempt=ckpt.attempt, iteration=ckpt.iteration)
        self.storage.put(key, ckpt.encode())
        mine = (ckpt.attempt, ckpt.iteration)
        for order, _ in self._listed():
            if order < mine:
                self._delete(*order)
        return key

    def newest(self, fingerprint: str) -> Checkpoint | None:
        """The newest valid checkpoint, by (attempt, iteration); invalid ones are skipped."""
        for (attempt, iteration), key in self._listed():
            try:
                ckpt = Checkpoint.decode(
                    self.storage.get(key), job_id=self.job_id, fingerprint=fingerprint
                )
                if (ckpt.attempt, ckpt.iteration) != (attempt, iteration):
                    raise CheckpointInvalid(f"its key says attempt {attempt}, it {ckpt.attempt}")
            except Exception as exc:  # a damaged or foreign object, or a read error: next one
                log.warning("job %s: checkpoint %s skipped: %s", self.job_id, key, exc)
                continue
            return ckpt
        return None

    def _delete(self, attempt: int, iteration: int) -> None:
        self.storage.delete_prefix(
            keys.checkpoint_folder(self.job_id, attempt=attempt, iteration=iteration)
        )

    def delete_all(self) -> None:
        """The job ended: its checkpoints go. Best effort: errors are logged."""
        try:
            self.storage.delete_prefix(keys.checkpoint_prefix(self.job_id))
        except Exception as exc:
            log.warning("job %s: could not delete its checkpoints: %s", self.job_id, exc)
