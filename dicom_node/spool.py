"""The spool: where received instances live on disk, written so that an acknowledged one survives.

Layout: ``SPOOL/ab/<sha256(sop_instance_uid)>.dcm`` (256 directories made up front, so that a
write never has to create and fsync a directory). Names come from a hash of the UID, never
from the UID itself (a sender controls the UID; ``../`` or 64 characters of anything must not
become a path). Writes go to ``SPOOL/tmp/`` first and are fsync'd; the ingest path then inserts
the index row and, only if the UID is new, renames the file into place (atomic on POSIX) and
fsyncs the directory before committing. After a crash a file is either complete at its final name
(indexed, or re-indexed at start-up by ``ingest.reindex_spool``) or an orphan in ``tmp/`` that
:meth:`Spool.clean_tmp` removes; it was never acknowledged in either of the latter cases.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

TMP_DIR = "tmp"
SUFFIX = ".dcm"


def relative_path(sop_instance_uid: str) -> str:
    """Spool-relative path of an instance (256-way fan-out keeps directories small)."""
    digest = hashlib.sha256(sop_instance_uid.encode("ascii", "replace")).hexdigest()
    return f"{digest[:2]}/{digest}{SUFFIX}"


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

    def write_temp(self, data: bytes | memoryview) -> tuple[Path, int]:
        """Write ``data`` to a fresh temporary file, fsync'd; returns ``(tmp_path, size)``.

        The caller then either :meth:`commit`\ s it (rename into place) or :meth:`discard`\ s it.
        """
        tmp = self.tmp_path()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            size = len(view)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        return tmp, size

    def commit(self, tmp: Path, relative: str) -> None:
        """Atomically rename ``tmp`` to its final name and make the rename durable."""
        final = self.root / relative
        os.replace(tmp, final)
        if self.fsync:
            _fsync_dir(final.parent)

    def discard(self, tmp: Path) -> None:
        _unlink_quietly(tmp)

    def write(self, sop_instance_uid: str, data: bytes | memoryview) -> tuple[str, int]:
        """Durably store ``data`` (a complete DICOM file) under the UID's name; ``(relative, size)``."""
        rel = relative_path(sop_instance_uid)
        tmp, size = self.write_temp(data)
        try:
            self.commit(tmp, rel)
        except BaseException:
            self.discard(tmp)
            raise
        return rel, size

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
