"""A real PostgreSQL server for the tests: its own cluster in a temporary folder on a free port.

``initdb`` + ``pg_ctl`` from the Debian ``postgresql`` package (``scripts/test.sh`` installs it),
never the system service. initdb refuses to run as root, so as root the cluster belongs to the
``postgres`` system user (``runuser``). The server listens on 127.0.0.1 only, trusts local
connections (a throw-away cluster) and is stopped by its own pid.

Fixtures (registered in ``tests/conftest.py`` through ``pytest_plugins``):

- ``postgres_server`` (session): the running ``PostgresServer``.
- ``postgres_url`` (function): a fresh, empty database on it, as a ``postgresql://`` URL, dropped
  after the test.

If PostgreSQL cannot be started, every test that needs it fails with the reason: a skip would hide
a broken CI.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port

# Debian keeps the server binaries in /usr/lib/postgresql/<major>/bin (newest first), not on PATH.
PG_BIN_DIRS = (*sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                      reverse=True), Path("/usr/local/bin"), Path("/usr/bin"))
SUPERUSER = "postgres"
# Test clusters need no crash safety against a power cut (fsync); everything else is the default,
# so commits, restarts and recovery behave as in production.
TEST_SETTINGS = {"fsync": "off", "shared_buffers": "32MB", "max_connections": "200"}


def pg_binary(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"PostgreSQL's {name} was not found (looked in {', '.join(map(str, PG_BIN_DIRS))} and PATH): "
                       "install the Debian package 'postgresql' (scripts/test.sh does)")


def _owner_command() -> list[str]:
    """Run as the ``postgres`` system user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SUPERUSER], check=True,
                       capture_output=True)
    return ["runuser", "-u", SUPERUSER, "--"]


@dataclass
class PostgresServer:
    """One PostgreSQL cluster of our own; ``start`` it, ``stop`` it by pid."""

    settings: dict[str, str] = field(default_factory=lambda: dict(TEST_SETTINGS))
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="voicebot-pg-")))
    pid: int | None = None
    _wal_start: dict[str, str] = field(default_factory=dict)  # database -> WAL position when it was created

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*_owner_command(), *args], capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}")
        return result

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            _owner_command()  # creates the system user when missing
            shutil.chown(self.folder, SUPERUSER, SUPERUSER)
        self.folder.chmod(0o700)
        if not self.data_dir.exists():
            self._run(pg_binary("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-sync")
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = " ".join([f"-p {self.port}", f"-c listen_addresses={self.host}", f"-c unix_socket_directories={self.folder}",
                            *(f"-c {key}={value}" for key, value in self.settings.items())])
        self._run(pg_binary("pg_ctl"), action, "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "120", "-o", options, *extra)
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast``: connected sessions are cut, in-flight transactions roll back."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        """Fast shutdown by pid (SIGINT to the postmaster), then wait for it to go."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------
    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}"')
            lsn = db.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
        self._wal_start[name] = str(lsn)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._wal_start.pop(name, None)

    def raw_bytes(self, database: str) -> bytes:
        """What a copy of the server's disk holds of one database: its table and index files, and the
        write-ahead log written since it was created (after a checkpoint, so nothing is only in memory)."""
        with self.admin() as db:
            db.execute("CHECKPOINT")
            oid = db.execute("SELECT oid FROM pg_database WHERE datname = %s", (database,)).fetchone()[0]  # type: ignore[index]
            start, start_offset = db.execute("SELECT * FROM pg_walfile_name_offset(%s::pg_lsn)",  # type: ignore[misc]
                                             (self._wal_start[database],)).fetchone()
            end, end_offset = db.execute("SELECT * FROM pg_walfile_name_offset(pg_current_wal_insert_lsn())").fetchone()  # type: ignore[misc]
        files = sorted(path for path in (self.data_dir / "base" / str(oid)).iterdir() if path.is_file())
        data = b"".join(path.read_bytes() for path in files)
        for segment in sorted(path for path in (self.data_dir / "pg_wal").iterdir() if path.is_file() and len(path.name) == 24):
            if not start <= segment.name <= end:
                continue
            chunk = segment.read_bytes()
            if segment.name == end:
                chunk = chunk[:end_offset]
            if segment.name == start:
                chunk = chunk[start_offset:]
            data += chunk
        return data


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole run; a failure to start fails the tests that need it."""
    server = PostgresServer()
    try:
        server.start()
    except Exception:
        server.remove()
        raise
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for one test (``postgresql://postgres@127.0.0.1:PORT/t_...``), dropped after it."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(database_of(url))
