"""A throwaway PostgreSQL server for the many-workers tests: Debian's binaries (scripts/test.sh installs the
`postgresql` package), `initdb` into a temporary folder, `pg_ctl start` on a free local port with trust
authentication, stopped and deleted at the end. PostgreSQL refuses to run as root: as root, the folder is
given to the `postgres` user and the binaries run as that user (runuser)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "sentitune"


def binaries() -> Path | None:
    """The newest installed server's bin folder (/usr/lib/postgresql/<version>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server() -> Iterator[tuple[str, Path]]:
    """(base URL without a database, bin folder) of a running server; stopped and removed afterwards."""
    bindir = binaries()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="sentitune-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", "start")
        try:
            yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}", bindir
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text() if (root / "server.log").is_file() else ""
        raise RuntimeError(f"PostgreSQL: {' '.join(e.cmd)} failed: {e.stderr.strip()} {log[-2000:]}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(base: str, name: str) -> str:
    """A fresh database on the server; its URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{base}/{name}"
