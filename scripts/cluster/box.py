"""A cluster in a box: a one-node SLURM, munge, PostgreSQL and an ``mlflow server`` on PostgreSQL.

Every daemon runs in the foreground as a child of this process, with all its state (keys, configs,
spools, the database, artifacts, logs) under one temporary folder, and listens on free loopback
ports only, so nothing in /etc or /var is touched and nothing clashes with services already
running. Stopping signals each daemon by the pid this process started, in reverse order, then
deletes the folder. Needs root (slurmd runs jobs as root here) and the Debian packages
``slurm-wlm munge postgresql`` (scripts/cluster/install.sh installs them).

    python scripts/cluster/box.py                 start, print the environment, stop on Ctrl-C
    python scripts/cluster/box.py -- CMD ARGS...  start, run CMD with SLURM_CONF and
                                                  MLFLOW_TRACKING_URI set, stop, exit with its code

In Python (tests/cluster/): ``with ClusterBox() as box: subprocess.run(..., env=box.env())``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("advlab.cluster")
START_TIMEOUT_S = 180  # per daemon; the first mlflow start migrates the database (~10-30 s)
STOP_TIMEOUT_S = 30
JOBS_GONE_TIMEOUT_S = 60  # scancel'ed jobs: SIGTERM, then SIGKILL after KillWait (10 s below)


class BoxError(RuntimeError):
    """A daemon did not start (the message carries the tails of every daemon log)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class Daemon:
    """A foreground daemon this process started, and how to stop it."""

    name: str
    proc: subprocess.Popen
    logs: tuple[Path, ...]
    stop_signal: int = signal.SIGTERM
    group: bool = False  # signal its process group (it forks workers: mlflow server)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            log.info("%s had already exited (%s)", self.name, self.proc.returncode)
            return
        started = time.monotonic()
        send = os.killpg if self.group else os.kill  # the group's id is our child's pid
        try:
            send(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                send(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended by itself meanwhile
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        log.info(
            "stopped %s (pid %d) in %.1f s", self.name, self.proc.pid, time.monotonic() - started
        )

    def log_tails(self) -> str:
        return "\n".join(f"--- {self.name}: {p.name} ---\n{tail(p)}" for p in self.logs)


def postgres_bin() -> Path:
    """The folder of the newest PostgreSQL server installed (Debian: not on PATH)."""
    found = Path("/usr/lib/postgresql").glob("*/bin/postgres")
    newest = max(found, key=lambda path: int(path.parts[-3]), default=None)
    if newest is None:
        raise BoxError("no PostgreSQL server in /usr/lib/postgresql: apt-get install postgresql")
    return newest.parent


def machine_node() -> dict[str, int]:
    """This machine as ``slurmd -C`` sees it (CPUs, sockets, cores, threads, RealMemory in MB)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {key: int(fields[key]) for key in keys}


class ClusterBox:
    """The four services, started by :meth:`start` (or ``with``) and stopped by :meth:`stop`."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise BoxError("the cluster box needs root: slurmd runs the jobs as root here")
        self.root = Path(tempfile.mkdtemp(prefix="advlab-cluster-"))
        self.root.chmod(0o755)  # the postgres user reaches its data folder inside
        self.daemons: list[Daemon] = []
        self.node = socket.gethostname().split(".")[0]
        self.munge_socket = self.root / "munge" / "munge.socket.2"
        self.slurm_conf = self.root / "slurm" / "slurm.conf"
        self.pg_port = free_port()
        self.pg_password = secrets.token_hex(16)
        self.db_uri = (
            f"postgresql+psycopg2://mlflow:{self.pg_password}@127.0.0.1:{self.pg_port}/mlflow"
        )
        self.artifacts = self.root / "mlflow-artifacts"
        self.mlflow_uri = f"http://127.0.0.1:{free_port()}"

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ClusterBox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start munge, SLURM, PostgreSQL and mlflow; on any failure stop what did start."""
        try:
            self._start_munge()
            self._start_slurm()
            self._start_postgres()
            self._start_mlflow()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel the box's jobs, stop every daemon by pid (last started first), delete the state.

        Jobs first: slurmstepd outlives slurmd, so a job still running would keep going.
        """
        try:
            if any(d.name == "slurmctld" and d.proc.poll() is None for d in self.daemons):
                self._cancel_jobs()
        finally:
            for daemon in reversed(self.daemons):
                daemon.stop()
            self.daemons.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """This process's environment plus what SLURM clients and MLflow clients need."""
        return {
            **os.environ,
            "SLURM_CONF": str(self.slurm_conf),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
        }

    def log_tails(self) -> str:
        """The end of every daemon's logs, for failure messages."""
        return "\n".join(d.log_tails() for d in self.daemons)

    # ------------------------------------------------------------------------------- helpers
    def _folder(self, name: str, mode: int = 0o700, owner: str | None = None) -> Path:
        path = self.root / name
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        if owner:
            shutil.chown(path, owner, owner)
        return path

    def _spawn(self, name: str, cmd: list[str], *extra_logs: Path, **kw) -> Daemon:
        out = self._folder("logs", 0o755) / f"{name}.out"
        with out.open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.root, **kw,
            )  # fmt: skip
        daemon = Daemon(name, proc, (out, *extra_logs))
        self.daemons.append(daemon)
        return daemon

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
        started = time.monotonic()
        deadline = started + timeout
        while not ready():
            dead = [d.name for d in self.daemons if d.proc.poll() is not None]
            if dead:
                raise BoxError(
                    f"{', '.join(dead)} exited while waiting for {what}\n{self.log_tails()}"
                )
            if time.monotonic() > deadline:
                raise BoxError(f"{what}: not ready after {timeout:.0f} s\n{self.log_tails()}")
            time.sleep(0.5)
        log.info("%s: ready in %.1f s", what, time.monotonic() - started)

    def _run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        """A short command; its output joins the error when it fails."""
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, **kw)
        if done.returncode != 0:
            raise BoxError(
                f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout}{done.stderr}"
            )
        return done

    def _ok(self, cmd: list[str], **kw) -> bool:
        return subprocess.run(cmd, capture_output=True, cwd=self.root, **kw).returncode == 0

    # ------------------------------------------------------------------------------- munge
    def _start_munge(self) -> None:
        folder = self._folder("munge")
        key = folder / "munge.key"
        self._run(["mungekey", "--create", f"--keyfile={key}"])
        self._spawn(
            "munged",
            [
                "munged", "--foreground", "--force",  # --force: run as root
                f"--socket={self.munge_socket}", f"--key-file={key}",
                f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'munged.seed'}",
                f"--log-file={folder / 'munged.log'}",
            ],
            folder / "munged.log",
        )  # fmt: skip
        sock = f"--socket={self.munge_socket}"
        self._wait("munge", lambda: self._ok(["bash", "-c", f"munge -n {sock} | unmunge {sock}"]))

    # ------------------------------------------------------------------------------- SLURM
    def write_slurm_conf(self) -> Path:
        """slurm.conf for one node: this machine's CPUs, 90% of its memory, state in the box."""
        folder = self._folder("slurm", 0o755)
        node = machine_node()
        node["RealMemory"] = int(node["RealMemory"] * 0.9)  # slurmd drains a node that has less
        spec = " ".join(f"{key}={value}" for key, value in node.items())
        lines = {
            "ClusterName": "advlab",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": self._folder("slurm/state"),
            "SlurmdSpoolDir": self._folder("slurm/spool"),
            "SlurmctldPidFile": folder / "slurmctld.pid",
            "SlurmdPidFile": folder / "slurmd.pid",
            "SlurmctldLogFile": folder / "slurmctld.log",
            "SlurmdLogFile": folder / "slurmd.log",
            # no cgroups in a container: track processes by their parent pid, bind nothing
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",  # jobs share the node by cores and memory
            "SchedulerType": "sched/backfill",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "ReturnToService": "2",
            "KillWait": "10",  # scancel: SIGTERM, SIGKILL 10 s later
            "MailProg": "/bin/true",
        }
        text = "".join(f"{key}={value}\n" for key, value in lines.items())
        text += f"NodeName={self.node} NodeAddr=127.0.0.1 {spec} State=UNKNOWN\n"
        text += f"PartitionName=box Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        self.slurm_conf.write_text(text)
        return folder

    def node_state(self) -> str:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env()
        )
        return done.stdout.strip()

    def _start_slurm(self) -> None:
        folder = self.write_slurm_conf()
        conf = ["-f", str(self.slurm_conf)]
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", *conf], folder / "slurmctld.log")
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, *conf], folder / "slurmd.log")
        self._wait("the SLURM node to be idle", lambda: self.node_state() == "idle")

    def jobs(self) -> list[str]:
        """Ids of the box's jobs still queued or running."""
        done = subprocess.run(
            ["squeue", "-h", "-o", "%A"], capture_output=True, text=True, env=self.env()
        )
        return done.stdout.split()

    def _cancel_jobs(self) -> None:
        if self.jobs():
            subprocess.run(["scancel", *self.jobs()], env=self.env(), capture_output=True)
            self._wait("the cancelled jobs to end", lambda: not self.jobs(), JOBS_GONE_TIMEOUT_S)

    # --------------------------------------------------------------------------- PostgreSQL
    def _start_postgres(self) -> None:
        bin_dir = postgres_bin()
        data = self._folder("postgres/data", owner="postgres")
        run_dir = self._folder("postgres/run", owner="postgres")
        as_pg = {"user": "postgres", "group": "postgres", "extra_groups": []}
        # local (socket) logins: the postgres OS user only; TCP logins: password (the mlflow user)
        auth = ["--auth-local=peer", "--auth-host=scram-sha-256"]
        self._run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", *auth], **as_pg)
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={run_dir}"]
        cmd = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.pg_port), *settings]
        daemon = self._spawn("postgres", cmd, **as_pg)
        daemon.stop_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, then stop
        where = ["-h", str(run_dir), "-p", str(self.pg_port)]
        self._wait("PostgreSQL", lambda: self._ok([str(bin_dir / "pg_isready"), *where], **as_pg))
        psql = [str(bin_dir / "psql"), *where, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
        self._run([*psql, f"CREATE USER mlflow WITH PASSWORD '{self.pg_password}';"], **as_pg)
        self._run([*psql, "CREATE DATABASE mlflow OWNER mlflow;"], **as_pg)

    # ------------------------------------------------------------------------------- MLflow
    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.mlflow_uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _start_mlflow(self) -> None:
        port = self.mlflow_uri.rsplit(":", 1)[1]
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.db_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", port, "--workers", "1",
        ]  # fmt: skip
        daemon = self._spawn("mlflow", cmd)
        daemon.group = True
        self._wait(f"mlflow server on {self.mlflow_uri}", self._healthy)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def sigterm_interrupts() -> object:
    """Make SIGTERM raise KeyboardInterrupt, so `kill <pid>` (or a CI timeout) unwinds through
    :meth:`ClusterBox.stop` as Ctrl-C does; return the handler it replaces."""
    return signal.signal(signal.SIGTERM, _interrupt)


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    sigterm_interrupts()
    with ClusterBox() as box:
        print(f"export SLURM_CONF={box.slurm_conf}", flush=True)
        print(f"export MLFLOW_TRACKING_URI={box.mlflow_uri}", flush=True)
        if command:
            return subprocess.run(command, env=box.env()).returncode
        try:
            signal.pause()  # until Ctrl-C
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
