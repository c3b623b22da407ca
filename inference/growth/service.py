"""The growth model in a child process, loaded while the parent does other work.

``noduletrack analyze`` is one process that needs torch and MONAI only at its end, for the forecast;
importing them takes ~2.5 s of mostly GIL-holding Python. On a machine without a spare core for a
warm-up thread (:func:`dicom_node.pipeline.warm_up_in_background`) they used to be imported when the
forecast started, on the critical path. :class:`ForecastService` starts a child interpreter at the
beginning of the command instead: it imports them and loads the weights on the core the parent
leaves idle while it reads the DICOM series and starts up (and beside the analysis), then waits. The
parent sends one request (the volumes through a shared-memory file, the measurements pickled) and
gets the :class:`~inference.types.Forecast` objects back: the same code
(:meth:`~inference.growth.forecast.GrowthForecaster.forecast`) on the same inputs, so the same
numbers as in-process.

Anything unexpected (the child could not start, load the model, or answer, or took longer than
``timeout_s`` for either: a stuck child must not hang the command) makes
:meth:`ForecastService.forecast` return None and the caller forecasts in-process as before, where
a missing model or a bad input is reported the usual way.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..types import CTVolume, Forecast, NoduleMeasurement

# The child's scheduling priority (added to the parent's). Not lowered: on a shared machine (another
# process per core) a nice-10 child got little CPU and was still loading when the forecast was due
# (1.3-2.9 s waited, against none at 0); when it competes with the analysis it takes the same CPU
# time at any priority, and the core left idle while the series load is used either way.
CHILD_NICE = 0

# How long to wait for the child to be ready, and then for its answer. Loading takes 2-5 s and a
# forecast well under a second per nodule on a CPU; beyond this the child is stuck.
TIMEOUT_S = 120.0


class ForecastService:
    """One forecast in a child process (see the module docstring). Always :meth:`close` it."""

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        root = str(Path(__file__).resolve().parents[2])  # the directory holding this ``inference``
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from inference.growth.service import _child_main; _child_main()")
        self._answered = False
        self.waited_s = 0.0  # how long forecast() waited for the child to be ready (for the log)
        self.child_peak_gb = 0.0  # the child's peak RSS (it adds to this process's)
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-c", code, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            close_fds=True)

    def forecast(self, current: CTVolume, nodules: Sequence[NoduleMeasurement], horizon_days: float,
                 priors: Sequence[tuple[CTVolume, NoduleMeasurement, float] | None]) -> tuple[str, list[Forecast]] | None:
        """``(model_version, forecasts)`` as ``GrowthForecaster.forecast`` gives them in-process
        (priors as ``(volume, nodule, days_before)``), or None when the child cannot answer."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            return None
        files: list[str] = []
        t0 = time.perf_counter()
        try:
            if not _readable(proc.stdout, self.timeout_s):
                return None
            ready = pickle.load(proc.stdout)
            self.waited_s = time.perf_counter() - t0
            if not (isinstance(ready, tuple) and ready[0] == "ready"):
                return None
            shared: dict[int, tuple[str, dict[str, Any]]] = {}

            def ref(vol: CTVolume) -> int:
                if id(vol) not in shared:
                    shared[id(vol)] = (_to_shared_file(vol.hu, files), _volume_fields(vol))
                return id(vol)

            request = {
                "current": ref(current),
                "nodules": list(nodules),
                "horizon_days": horizon_days,
                "priors": [None if p is None else (ref(p[0]), p[1], p[2]) for p in priors],
                "volumes": shared,
            }
            pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.close()
            if not _readable(proc.stdout, self.timeout_s):
                return None
            reply = pickle.load(proc.stdout)
        except (OSError, EOFError, pickle.PickleError, AttributeError, ValueError):
            return None
        finally:
            for f in files:
                Path(f).unlink(missing_ok=True)
        self._answered = True
        if isinstance(reply, tuple) and reply[0] == "ok":
            self.child_peak_gb = float(reply[2])
            return ready[1], reply[1]
        return None

    def close(self) -> None:
        """Stop the child (if it is still loading or waiting) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if proc.poll() is None and self._answered:
            try:
                proc.wait(timeout=5.0)  # it exits after its answer
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()  # not needed (no nodule, or the analysis failed): do not wait for it to load
        proc.wait()

    def __enter__(self) -> "ForecastService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readable(stream: Any, timeout_s: float) -> bool:
    """Has the child written something (or exited) within ``timeout_s``? (Read only from an empty
    buffer: the child writes a reply only when asked, so nothing is buffered ahead of it.)"""
    return bool(select.select([stream], [], [], timeout_s)[0])


def _volume_fields(vol: CTVolume) -> dict[str, Any]:
    return {"geometry": vol.geometry, "study_instance_uid": vol.study_instance_uid,
            "series_instance_uid": vol.series_instance_uid, "frame_of_reference_uid": vol.frame_of_reference_uid,
            "study_date": vol.study_date, "patient_id": vol.patient_id, "series_description": vol.series_description}


def _shm_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _to_shared_file(array: np.ndarray, files: list[str]) -> str:
    """Write ``array``'s bytes to a file in shared memory (tmpfs); returns ``path``; the caller deletes it."""
    fd, path = tempfile.mkstemp(prefix="noduletrack-forecast-", suffix=".raw", dir=_shm_dir())
    files.append(path)
    a = np.ascontiguousarray(array)
    with os.fdopen(fd, "wb") as fh:
        fh.write(memoryview(a).cast("B"))
    return f"{path}\0{a.dtype.str}\0{','.join(str(n) for n in a.shape)}"


def _from_shared_file(spec: str) -> np.ndarray:
    path, dtype, shape = spec.split("\0")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=tuple(int(n) for n in shape.split(",")))


def _child_main() -> None:
    """The child: load the model, answer one request, exit."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the replies
    if CHILD_NICE:
        try:
            os.nice(CHILD_NICE)
        except OSError:
            pass

    def send(obj: Any) -> bool:
        try:
            pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        except OSError:  # the parent is gone or needs no answer
            return False
        return True

    try:
        # as dicom_node.pipeline.growth_forecaster loads it in-process
        import torch

        from .forecast import GrowthForecaster, PriorPatch

        model = GrowthForecaster(device="cuda" if torch.cuda.is_available() else "cpu")
    except BaseException as exc:  # noqa: BLE001 - the parent loads it in-process and reports
        send(("error", repr(exc)))
        return
    if not send(("ready", str(model.model_version))):
        return
    try:
        request = pickle.load(sys.stdin.buffer)
    except (EOFError, OSError):
        return  # the parent needed no forecast
    try:
        volumes = {}
        for key, (spec, fields) in request["volumes"].items():
            hu = _from_shared_file(spec)
            volumes[key] = CTVolume(hu=hu, sop_instance_uids=[], **fields)
        priors = [None if p is None else PriorPatch(volume=volumes[p[0]], nodule=p[1], days_before=p[2])
                  for p in request["priors"]]
        forecasts = model.forecast(volumes[request["current"]], request["nodules"], request["horizon_days"],
                                   priors=priors)
    except BaseException as exc:  # noqa: BLE001 - the parent forecasts in-process and reports
        send(("error", repr(exc)))
        return
    import resource

    send(("ok", forecasts, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2))
