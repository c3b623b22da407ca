"""Real peers for the test suite: Orthanc, PostgreSQL, dcmtk, dciodvfy.

Each server runs with its own temporary configuration and ports and is reachable on loopback only.
Orthanc and dcmtk's ``storescp`` have no bind-address option (PEERS.md), so they run with a tiny
``LD_PRELOAD`` wrapper that rewrites a wildcard ``bind()`` to 127.0.0.1. Every dcmtk process and
Orthanc get ``TCP_NODELAY=1`` (otherwise Nagle stalls each C-STORE by ~45 ms).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

_BIND_WRAPPER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

/* Rewrite bind() to the wildcard address into a bind to loopback, so servers without a
   bind-address option (Orthanc 1.10, dcmtk 3.6.7 storescp) are reachable on 127.0.0.1 only. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t) = 0;
    if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, addr, sizeof in);
        if (in.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (struct sockaddr *)&in, sizeof in);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) {
            in6.sin6_addr = in6addr_loopback;
            return real_bind(fd, (struct sockaddr *)&in6, sizeof in6);
        }
    }
    return real_bind(fd, addr, len);
}
"""

CACHE_DIR = Path(os.environ.get("NODULETRACK_TEST_CACHE", Path(__file__).resolve().parent.parent / ".cache"))


def bind_wrapper() -> Path:
    """Build (once, cached) and return the path of the loopback ``bind()`` wrapper library."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lib = CACHE_DIR / "bind_loopback.so"
    src = CACHE_DIR / "bind_loopback.c"
    if not (lib.exists() and src.exists() and src.read_text() == _BIND_WRAPPER_C):
        src.write_text(_BIND_WRAPPER_C)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src), "-ldl"], check=True)
        os.replace(tmp, lib)
    return lib


def loopback_env(**extra: str) -> dict[str, str]:
    """Environment for a dcmtk/Orthanc process: loopback-only binds, Nagle off."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(bind_wrapper())
    env["TCP_NODELAY"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def listening_addresses(port: int) -> list[str]:
    """Local addresses with a listening TCP socket on ``port`` (from ``ss``), e.g. ['127.0.0.1:4242']."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


def terminate(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------- Orthanc


@dataclass
class Orthanc:
    """A running Orthanc with its own config; ``rest()`` talks to its REST API."""

    aet: str
    dicom_port: int
    http_port: int
    workdir: Path
    proc: subprocess.Popen
    log_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rest(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=60) as resp:
            payload = resp.read()
        return payload if raw else (json.loads(payload) if payload else None)

    def get(self, path: str) -> Any:
        return self.rest("GET", path)

    def upload(self, dicom_bytes: bytes) -> Any:
        return self.rest("POST", "/instances", dicom_bytes)

    def studies(self) -> list[dict[str, Any]]:
        return [self.get(f"/studies/{sid}") for sid in self.get("/studies")]

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        found = self.rest("POST", "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
        return list(found)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc, timeout=15)

    def start(self) -> None:
        """(Re)start with the same configuration and storage (e.g. after :meth:`stop`)."""
        if self.proc.poll() is None:
            return
        self.proc = _launch_orthanc(self.workdir, self.log_path)
        wait_for_port(self.http_port, 60, self.proc)
        wait_for_port(self.dicom_port, 60, self.proc)


def _launch_orthanc(workdir: Path, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        ["Orthanc", str(workdir / "orthanc.json")],
        cwd=workdir, env=loopback_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def start_orthanc(
    workdir: Path,
    *,
    aet: str = "ORTHANC",
    modalities: dict[str, tuple[str, int]] | None = None,
    lua: str | None = None,
    stable_age: int = 2,
    dicomweb: bool = False,
    extra: dict[str, Any] | None = None,
) -> Orthanc:
    """Start Orthanc in ``workdir`` on free loopback ports.

    ``modalities`` maps a name to ``(aet, port)`` on 127.0.0.1 (for C-MOVE destinations and the
    auto-route target); ``lua`` is the text of a Lua script (e.g. an ``OnStableStudy`` router).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config: dict[str, Any] = {
        "Name": f"test-{aet}",
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StableAge": stable_age,
        "DicomModalities": {name: {"AET": a, "Host": "127.0.0.1", "Port": p} for name, (a, p) in (modalities or {}).items()},
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        "UserMetadata": {"Routed": 1024},
        "StorageCompression": False,
        "SyncStorageArea": True,  # fsync each file, Orthanc's default: the durability peer
        "Plugins": [],
        "HttpTimeout": 60,
        "DicomScuTimeout": 30,
    }
    if lua is not None:
        (workdir / "route.lua").write_text(lua)
        config["LuaScripts"] = [str(workdir / "route.lua")]
    if dicomweb:
        config["Plugins"] = ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full", "SeriesMetadata": "Full"}
    config.update(extra or {})
    (workdir / "orthanc.json").write_text(json.dumps(config, indent=2))
    log_path = workdir / "orthanc.log"
    proc = _launch_orthanc(workdir, log_path)
    orthanc = Orthanc(aet=aet, dicom_port=dicom_port, http_port=http_port, workdir=workdir, proc=proc, log_path=log_path, config=config)
    try:
        wait_for_port(http_port, 60, proc)
        wait_for_port(dicom_port, 60, proc)
    except Exception as exc:
        orthanc.stop()
        raise RuntimeError(f"Orthanc did not start: {exc}\n{orthanc.log()[-3000:]}") from exc
    return orthanc


def route_to_lua(modality: str) -> str:
    """Lua ``OnStableStudy`` auto-router to ``modality``, guarded by the ``Routed`` metadata (PEERS.md)."""
    return f"""
function OnStableStudy(studyId, tags, metadata)
  if metadata['Routed'] ~= nil and metadata['Routed'] ~= '' then
    return
  end
  local series = ParseJson(RestApiGet('/studies/' .. studyId)).Series
  local body = '{{"Resources": ["' .. table.concat(series, '","') .. '"], "Asynchronous": true}}'
  local answer = RestApiPost('/modalities/{modality}/store', body)
  if answer == nil then
    print('route to {modality} failed for ' .. studyId)
    return
  end
  RestApiPut('/studies/' .. studyId .. '/metadata/Routed', '1')
  print('routed ' .. studyId .. ' to {modality}')
end
"""


# ------------------------------------------------------------------------------------ PostgreSQL


@dataclass
class Postgres:
    datadir: Path
    port: int
    socket_dir: Path
    bindir: Path

    @property
    def url(self) -> str:
        # Unix socket + loopback port: psycopg uses host=<socket dir>.
        return f"postgresql+psycopg://postgres@/noduletrack?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str) -> str:
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", name],
            check=True, capture_output=True,
        )
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"], capture_output=True)


def postgres_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql); `make test` installs them")
    return candidates[-1].parent


def start_postgres(workdir: Path) -> Postgres:
    """A throwaway cluster: ``initdb`` in ``workdir``, listening on a unix socket and 127.0.0.1 only."""
    bindir = postgres_bindir()
    datadir, socket_dir = workdir / "data", workdir / "sock"
    socket_dir.mkdir(parents=True, exist_ok=True)
    # initdb refuses to run as root: run it (and the server) as the 'postgres' user when we are root.
    as_user: list[str] = []
    if os.geteuid() == 0:
        _ensure_postgres_user()
        shutil.chown(workdir, "postgres")
        shutil.chown(socket_dir, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True)
    port = free_port()
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={socket_dir} -c fsync=off -c max_connections=100"
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(workdir / "pg.log"), "-w", "start"],
                   check=True, capture_output=True)
    pg = Postgres(datadir=datadir, port=port, socket_dir=socket_dir, bindir=bindir)
    subprocess.run(as_user + [str(bindir / "createdb"), "-h", str(socket_dir), "-p", str(port), "-U", "postgres", "noduletrack"],
                   check=True, capture_output=True)
    if as_user:
        pg.stop = lambda: subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"], capture_output=True)  # type: ignore[method-assign]
    return pg


def _ensure_postgres_user() -> None:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)


# ------------------------------------------------------------------------------------- dciodvfy


@dataclass
class Validation:
    path: Path
    iod: str
    errors: list[str]
    warnings: list[str]
    output: str

    @property
    def ok(self) -> bool:
        return not self.errors


def dciodvfy(path: str | os.PathLike[str]) -> Validation:
    """Validate one DICOM file with dicom3tools' ``dciodvfy``: any ``Error`` line is a failure."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    output = (proc.stdout + proc.stderr).strip()
    lines = output.splitlines()
    errors = [ln for ln in lines if "Error" in ln]
    warnings = [ln for ln in lines if "Warning" in ln]
    iod = lines[0].strip() if lines and "Error" not in lines[0] and "Warning" not in lines[0] else ""
    return Validation(Path(path), iod, errors, warnings, output)


def assert_valid_dicom(path: str | os.PathLike[str]) -> Validation:
    result = dciodvfy(path)
    assert result.ok, f"dciodvfy errors in {path}:\n" + "\n".join(result.errors)
    return result


@contextlib.contextmanager
def tempdir(prefix: str = "nt-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
