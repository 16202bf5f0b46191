"""The local spool: where events go while Redis is unreachable, so no click is lost.

Each tracker process appends encoded events, one per line, to its own active
file and holds an exclusive ``flock`` on it. A file nobody holds (sealed by
its writer once Redis is back, or left by a process that died) is claimed by
whichever replayer locks it first, written to the stream and unlinked. A
replay interrupted half-way is replayed again; event ids are generated at
the edge, so the duplicates collapse downstream.

A batch is acknowledged only once it is whole on disk: written, then
``fdatasync``ed (one sync per batch, measured in docs/tracker.md), in a
file whose directory entry was synced when it was created (a power loss
must not take the file away with batches already acknowledged). A write
that fails part-way (ENOSPC after some bytes, EIO) or a sync that fails is
cut off again with ``ftruncate`` back to the end of the last acknowledged
batch, so the next batch never lands on a torn line. Should that truncation
fail too, the file stays marked torn: every later write first retries it
and is refused until it succeeds, and so does every replayer tick that
would seal the file (it is never sealed with a refused batch's bytes in
it), and so does ``close`` at exit, which sets the file aside
(``QUARANTINE``) if it still cannot. Only a process killed inside a write leaves a torn last line, and that
request was never answered.

The depth (``/healthz``, ``oros_tracker_spool_depth``) is what the
directory holds, whoever wrote it: this process, the other workers, or a
process that died and left its file. Every worker reports the same number.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oros.events import uuid7

from .metrics import Metrics

log = logging.getLogger(__name__)

# A file that could not be cut back to its acknowledged batches at exit: no replayer claims it (``*.log``
# only). An operator truncates it to the length in its name and renames it ``.log`` to replay it.
QUARANTINE = ".torn"


@dataclass
class ClaimedFile:
    """A spool file this process holds the lock of, until ``release``."""

    path: Path
    fd: int

    def read_events(self) -> list[bytes]:
        chunks, offset = [], 0
        while chunk := os.pread(self.fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
        # A process killed inside write(2) can leave a torn last line; the
        # request that wrote it was never answered, so nothing promised is lost.
        lines = data.split(b"\n")
        if lines and not data.endswith(b"\n"):
            torn = lines.pop()
            if torn:
                log.warning("spool file ends in a torn line", extra={"path": str(self.path), "bytes": len(torn)})
        return [line for line in lines if line]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        os.close(self.fd)


class SpoolError(Exception):
    """Reading, sealing or removing a spool file failed (an OSError of the disk, not of Redis)."""


class Spool:
    def __init__(self, directory: Path, metrics: Metrics) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._metrics = metrics
        self._fd: int | None = None
        self._active: Path | None = None
        self._size = 0  # bytes of the active file that are whole, synced batches
        self._torn = False  # the active file may end past _size: truncate before writing
        self._counted: dict[Path, tuple[int, int]] = {}  # file -> (bytes up to its last newline, lines in them)
        self.write_error: str | None = None  # why the last write failed; None once one succeeds
        metrics.spool_depth.set_function(self.depth)

    def write(self, events: list[bytes]) -> None:
        """Append ``events`` and sync them; raises OSError, leaving the file as it was, if they are not all on disk."""
        data = b"".join(event + b"\n" for event in events)
        try:
            if self._fd is None:
                self._open()
            if self._torn:
                os.ftruncate(self._fd, self._size)
                self._torn = False
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            self.write_error = repr(exc)
            if self._fd is not None:
                self._cut_back()
            raise
        self._size += len(data)
        self.write_error = None
        self._metrics.events[("spool",)] += len(events)

    def _cut_back(self) -> None:
        """Drop what a failed write left past the last whole batch."""
        try:
            os.ftruncate(self._fd, self._size)
            self._torn = False
        except OSError:
            log.exception("cannot truncate the spool after a failed write", extra={"path": str(self._active)})
            self._torn = True

    def _open(self) -> None:
        """Create and lock a new active file, and sync the directory so that its entry outlives a power loss."""
        path = self.directory / f"active-{os.getpid()}-{uuid7().hex}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._active, self._size, self._torn = fd, path, 0, False

    def seal(self) -> None:
        """Close the active file so it becomes replayable (by any process); every batch in it is already synced.

        A file left torn (a failed write whose truncation failed too) is cut back first, here as well as
        before the next write: once Redis is back no write comes, and its acknowledged batches would wait
        for one. Raises OSError when that truncation or the close fails; the replayer retries next tick.
        """
        if self._fd is None:
            return
        if self._torn:
            os.ftruncate(self._fd, self._size)
            self._torn = False
        fd, self._fd, self._active = self._fd, None, None
        os.close(fd)  # the descriptor is freed even when close(2) reports EIO: it must not be closed again

    def has_files(self) -> bool:
        """Whether anything waits for replay: a file no writer holds, or our own torn file that ``seal`` retries."""
        return self._torn or any(path != self._active for path in self.directory.glob("*.log"))

    def claim(self) -> Iterator[ClaimedFile]:
        """Lock, one at a time and oldest first, every spool file no live writer holds."""
        for path in sorted(self.directory.glob("*.log"), key=_age):
            if path == self._active:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # Another replayer may have finished and unlinked it after we listed it.
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)
                continue
            yield ClaimedFile(path, fd)

    def replayed(self, count: int) -> None:
        self._metrics.replayed.inc(count)

    def depth(self) -> int:
        """Events waiting in the directory's spool files, whoever wrote them: their complete lines.

        Files only grow (a failed write is cut back to where it began), so each file's new bytes
        are read once; one that no longer ends where it was counted is counted again. A file that
        cannot be read now (a failing disk, which the replayer reports) keeps its last count.
        """
        counted = {}
        for path in self.directory.glob("*.log"):
            offset, lines = last = self._counted.get(path, (0, 0))
            try:
                with open(path, "rb") as file:
                    if offset and (file.seek(0, os.SEEK_END) < offset or _byte_at(file, offset - 1) != b"\n"):
                        offset, lines = 0, 0
                    file.seek(offset)
                    read = offset
                    while chunk := file.read(1 << 20):
                        lines += chunk.count(b"\n")
                        if (last := chunk.rfind(b"\n")) >= 0:
                            offset = read + last + 1  # a line still being written (or torn) is read again
                        read += len(chunk)
            except FileNotFoundError:  # replayed and removed meanwhile
                continue
            except OSError:
                offset, lines = last
            counted[path] = (offset, lines)
        self._counted = counted
        return sum(lines for _, lines in counted.values())

    def close(self) -> None:
        """Close the active file at exit, leaving only acknowledged batches for a replayer to claim.

        A file still torn (a refused batch's bytes past ``_size``: whole lines when only its sync failed)
        is cut back first; should that fail again, it is renamed out of the replayers' sight
        (``QUARANTINE``, the acknowledged length in its name) rather than have a refused batch replayed.
        """
        if self._fd is None:
            return
        fd, path, self._fd, self._active = self._fd, self._active, None, None
        try:
            if self._torn:
                self._torn = False
                try:
                    os.ftruncate(fd, self._size)
                except OSError:
                    self._quarantine(path)
        finally:
            os.close(fd)

    def _quarantine(self, path: Path) -> None:
        kept = path.with_name(f"{path.stem}.{self._size}{QUARANTINE}")
        log.error("spool file left torn at exit: set aside, its first bytes are acknowledged events",
                  extra={"path": str(kept), "acknowledged_bytes": self._size})
        try:
            os.rename(path, kept)
        except OSError:
            log.exception("cannot set a torn spool file aside: a replay may resend a refused batch",
                          extra={"path": str(path)})


def _byte_at(file, offset: int) -> bytes:
    file.seek(offset)
    return file.read(1)


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
