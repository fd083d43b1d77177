"""A team's tracking setup on one machine, from real parts: PostgreSQL (Debian's `postgresql` binaries) in a
folder, an MLflow tracking server on it that serves the artifacts itself (`--artifacts-destination`, so
clients need no shared filesystem), and a second database in the same PostgreSQL for Optuna's study storage.

Everything listens on 127.0.0.1 only. PostgreSQL authenticates with a generated password (scram-sha-256)
that lives in a libpq password file in the folder (0600), so it appears in no URL, command line or process
list: clients find it through $PGPASSFILE, which `env_lines` exports with the two URLs.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from medical_matryoshka.core.errors import PipelineError

USER = "mlflow"  # the PostgreSQL role initdb creates (a superuser of this private cluster only)
DATABASES = ("mlflow", "optuna")  # MLflow's and Optuna's schemas both keep an `alembic_version` table: apart
STATE = "server.json"  # in the folder: ports and pids, for `stop` and `env`
SYSTEM_USER = "postgres"  # PostgreSQL refuses to run as root: as root, its processes run as this user


@dataclass
class Server:
    folder: str
    pg_port: int
    mlflow_port: int
    mlflow_pid: int

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def database_url(self, database: str) -> str:
        """SQLAlchemy URL without the password (libpq reads it from $PGPASSFILE)."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def passfile(self) -> Path:
        return Path(self.folder) / "pgpass"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a local server, or a dead one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_mlflow(*args: str) -> tuple[subprocess.Popen, str]:
    """`mlflow <args> --host 127.0.0.1 --port <free>` (ui or server), once its /health answers: (process, URL)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _answers(base):
            return server, base
        time.sleep(1)
    server.kill()
    raise PipelineError(f"mlflow {args[0]} did not answer within 120 s")


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if versions:
        return str(versions[-1])
    raise PipelineError(
        f"PostgreSQL's `{name}` is not installed; install the server (Debian/Ubuntu: apt-get install postgresql, "
        "macOS: brew install postgresql) or point MLFLOW_TRACKING_URI at your team's server"
    )


def _as_postgres() -> dict:
    """subprocess keywords that run a PostgreSQL program as a user it accepts (not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PipelineError(
            f"PostgreSQL does not run as root and there is no `{SYSTEM_USER}` user to run it as; start this as "
            "another user, or create one (Debian's postgresql package does)"
        ) from None
    return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}


def _reachable_by_postgres(path: Path) -> None:
    """As root, every folder above the data folder must let the `postgres` user through."""
    if os.geteuid() != 0:
        return
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        if folder.exists() and not os.stat(folder).st_mode & 0o001:
            raise PipelineError(
                f"{path}: the `{SYSTEM_USER}` user cannot enter {folder} (mode {oct(os.stat(folder).st_mode)[-3:]}), "
                "and PostgreSQL runs as that user when started by root; choose a folder it can reach, e.g. under "
                "/srv or /var/tmp"
            )


def _run(cmd: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed: {detail[-1] if detail else f'exit {result.returncode}'}")


def _wait_for_health(uri: str, pid: int, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(uri):
            return
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise PipelineError(f"the MLflow server exited while starting ({tail[0] if tail else 'no output'}; {log})")
        time.sleep(0.5)
    raise PipelineError(f"the MLflow server did not answer {uri}/health within {timeout:.0f} s ({log})")


def read_state(folder: Path) -> Server:
    state = folder / STATE
    if not state.is_file():
        raise PipelineError(f"{folder} holds no server started by `python -m commands.team_server start {folder}`")
    return Server(**json.loads(state.read_text(encoding="utf-8")))


def _pg_running(data: Path) -> bool:
    return (
        subprocess.run([pg_bin("pg_ctl"), "status", "-D", str(data)], capture_output=True, **_as_postgres()).returncode
        == 0
    )


def start(folder: Path, pg_port: int | None = None, mlflow_port: int | None = None) -> Server:
    """PostgreSQL in <folder>/postgres (initdb the first time), the databases, and the MLflow server with its
    artifacts in <folder>/artifacts. A folder whose server is already running is left as it is."""
    folder = folder.resolve()
    if (folder / STATE).is_file():  # started before: the same ports again (after a reboot, say), unless told
        server = read_state(folder)
        if _pg_running(folder / "postgres") and _answers(server.tracking_uri):
            return server
        pg_port, mlflow_port = pg_port or server.pg_port, mlflow_port or server.mlflow_port
    as_pg = _as_postgres()
    if as_pg:
        _reachable_by_postgres(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data, passfile = folder / "postgres", folder / "pgpass"
    pg_port = pg_port or free_port()
    if not (data / "PG_VERSION").is_file():
        if data.exists() and any(data.iterdir()):
            raise PipelineError(f"{data} exists and is not a PostgreSQL data folder; choose an empty folder")
        data.mkdir(exist_ok=True)
        password = secrets.token_urlsafe(24)
        pwfile = data.parent / ".initdb-password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if as_pg:
            shutil.chown(data, SYSTEM_USER, SYSTEM_USER)
            shutil.chown(pwfile, SYSTEM_USER, SYSTEM_USER)
        try:
            _run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                "initdb",
                **as_pg,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        passfile.write_text(f"127.0.0.1:*:*:{USER}:{password}\n")
        passfile.chmod(0o600)
    options = f"-c listen_addresses=127.0.0.1 -c port={pg_port} -c unix_socket_directories=''"
    if not _pg_running(data):
        _run(
            [pg_bin("pg_ctl"), "start", "-w", "-D", str(data), "-l", str(data / "server.log"), "-o", options],
            f"starting PostgreSQL (log: {data / 'server.log'})",
            **as_pg,
        )
    env = {**os.environ, "PGPASSFILE": str(passfile)}
    _create_databases(pg_port, passfile)
    mlflow_port = mlflow_port or free_port()
    server = Server(str(folder), pg_port, mlflow_port, 0)
    (folder / "artifacts").mkdir(exist_ok=True)
    log = folder / "mlflow.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(mlflow) if mlflow.exists() else "mlflow",
                "server",
                "--backend-store-uri",
                server.database_url("mlflow"),
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server.mlflow_pid = proc.pid
    (folder / STATE).write_text(json.dumps(asdict(server), indent=2) + "\n", encoding="utf-8")
    _wait_for_health(server.tracking_uri, proc.pid, log)
    return server


def _answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2):
            return True
    except OSError:
        return False


def _create_databases(pg_port: int, passfile: Path) -> None:
    import psycopg

    try:
        login = {"host": "127.0.0.1", "port": pg_port, "user": USER, "passfile": str(passfile)}
        with psycopg.connect(dbname="postgres", autocommit=True, **login) as conn:
            have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in have:
                    conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as err:
        raise PipelineError(f"PostgreSQL on 127.0.0.1:{pg_port}: {str(err).strip().splitlines()[0]}") from None


def stop(folder: Path) -> None:
    """The MLflow server, then PostgreSQL (fast shutdown: open transactions roll back). Data stays."""
    folder = folder.resolve()
    server = read_state(folder)
    try:
        os.killpg(server.mlflow_pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(server.mlflow_pid):
            time.sleep(0.2)
        if _alive(server.mlflow_pid):
            os.killpg(server.mlflow_pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    data = folder / "postgres"
    if _pg_running(data):
        _run([pg_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(data)], "stopping PostgreSQL", **_as_postgres())


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def env_lines(server: Server) -> list[str]:
    """What a client on this machine exports: the tracking server, the study storage, the password file."""
    return [
        f"export MLFLOW_TRACKING_URI={server.tracking_uri}",
        f"export OPTUNA_STORAGE={server.database_url('optuna')}",
        f"export PGPASSFILE={server.passfile}",
    ]
