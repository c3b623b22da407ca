"""The spool: where received instances live on disk, written so that an acknowledged one survives.

Layout: ``SPOOL/ab/<sha256(sop_instance_uid)>.dcm`` (256 directories made up front, so that a
write never has to create and fsync a directory). Names come from a hash of the UID, never
from the UID itself (a sender controls the UID; ``../`` or 64 characters of anything must not
become a path). Writes go to ``SPOOL/tmp/`` first; the ingest path then inserts the index row
and, only if the UID is new, renames the file into place (atomic on POSIX) and fsyncs it before
the index commits and Success is returned (see :meth:`Spool.commit` for why the fsync follows the
rename). After a crash a file is either complete at its final name (indexed, or re-indexed at
start-up by ``ingest.reindex_spool``), an orphan in ``tmp/`` that :meth:`Spool.clean_tmp`
removes, or (power loss only) an unparseable unindexed file that start-up quarantines; none of
the latter were ever acknowledged.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

TMP_DIR = "tmp"
QUARANTINE_DIR = "quarantine"
SUFFIX = ".dcm"


def relative_path(sop_instance_uid: str) -> str:
    """Spool-relative path of an instance (256-way fan-out keeps directories small)."""
    digest = hashlib.sha256(sop_instance_uid.encode("ascii", "replace")).hexdigest()
    return f"{digest[:2]}/{digest}{SUFFIX}"


@dataclass
class TempFile:
    """A written, not yet committed instance file (its descriptor stays open for the fsync)."""

    path: Path
    fd: int
    size: int
    renamed: bool = False


class Spool:
    """A directory of received instances. Create once per process; thread-safe."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.tmp = self.root / TMP_DIR
        self.tmp.mkdir(parents=True, exist_ok=True)
        made = False
        for i in range(256):
            sub = self.root / f"{i:02x}"
            if not sub.is_dir():
                sub.mkdir(exist_ok=True)
                made = True
        if made and fsync:
            _fsync_dir(self.root)
            _fsync_dir(self.root.parent)

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def tmp_path(self) -> Path:
        """A fresh temporary name on the spool's filesystem (so the final rename is atomic)."""
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def write_temp(self, data: bytes | memoryview | list[bytes | memoryview]) -> TempFile:
        """Write ``data`` (or the concatenation of a list of buffers, without copying them) to a
        fresh temporary file. Not yet durable: :meth:`commit` or :meth:`discard` it."""
        path = self.tmp_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            parts = [memoryview(b).cast("B") for b in (data if isinstance(data, list) else [data])]
            size = sum(len(p) for p in parts)
            while parts:
                written = os.writev(fd, parts)
                while parts and written >= len(parts[0]):
                    written -= len(parts[0])
                    parts.pop(0)
                if parts and written:
                    parts[0] = parts[0][written:]
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise
        return TempFile(path, fd, size)

    def commit(self, tmp: TempFile, relative: str) -> None:
        """Rename ``tmp`` to its final name, then make file and name durable with one fsync.

        Why rename first: on ext4 (data=ordered), XFS and btrfs an fsync of the file commits the
        journal transaction that also holds the rename, so one journal commit covers data, inode
        and name — half the cost of fdatasync + rename + directory fsync, measured. A power loss
        before the fsync can leave an incomplete file at its final name; it was neither indexed
        (the index transaction commits after this returns) nor acknowledged, and start-up
        recovery (``ingest.reindex_spool``) quarantines any unindexed file that does not parse.
        A process crash (kill -9) cannot leave one: the data was written before the rename.
        """
        final = self.root / relative
        os.replace(tmp.path, final)
        tmp.renamed = True
        if self.fsync:
            os.fsync(tmp.fd)
        os.close(tmp.fd)
        tmp.fd = -1

    def discard(self, tmp: TempFile) -> None:
        """Forget a temporary file that was not committed (no-op after :meth:`commit`)."""
        if tmp.fd >= 0:
            os.close(tmp.fd)
            tmp.fd = -1
        if not tmp.renamed:
            _unlink_quietly(tmp.path)

    def write(self, sop_instance_uid: str, data: bytes | memoryview) -> tuple[str, int]:
        """Durably store ``data`` (a complete DICOM file) under the UID's name; ``(relative, size)``."""
        rel = relative_path(sop_instance_uid)
        tmp = self.write_temp(data)
        try:
            self.commit(tmp, rel)
        finally:
            self.discard(tmp)
        return rel, tmp.size

    def quarantine(self, path: Path) -> Path:
        """Move a file that must not be indexed out of the spool proper (kept for inspection)."""
        target_dir = self.root / QUARANTINE_DIR
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        os.replace(path, target)
        return target

    def remove(self, relative: str) -> None:
        _unlink_quietly(self.root / relative)

    def clean_tmp(self) -> int:
        """Delete leftovers of writes interrupted by a crash (never acknowledged). Returns the count."""
        count = 0
        for entry in self.tmp.iterdir():
            _unlink_quietly(entry)
            count += 1
        return count

    def files(self) -> list[Path]:
        """Every stored instance file (not the temporary ones)."""
        return [p for p in self.root.glob(f"??/*{SUFFIX}")]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
