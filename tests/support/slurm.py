"""A real single-node SLURM for tests: munged, slurmctld and slurmd on this machine, in a temporary folder.

Debian's ``slurm-wlm`` and ``munge`` (installed by ``.ci/run`` when it runs as root). The cluster is private to the
test session: its own munge key and socket, its own ports, pid/spool/state/log files in the temporary folder, one
node (``hostname -s``, ``CPUs=$(nproc)``, address 127.0.0.1), linuxproc process tracking, no cgroups. The daemons run
in the foreground (``-D``/``-F``) as children of the test process and are stopped by PID.

Tests that need it take the ``slurm`` fixture (and carry the ``slurm`` marker); they are skipped with the reason when
this machine cannot run it (not root, binaries missing, a daemon that does not start), unless SLURM is required
(``ROOTLETS_REQUIRE=slurm`` or ``all``, which ``.ci/run`` sets as root; see ``support/required.py``): then that is an
error.
When a test that used it fails, the tails of the daemon logs are attached to its report and the folder is kept (its
path is in the report).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.required import need

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}
PARTITION = "rootlets"
_LOG_NAMES = ("munged.log", "slurmctld.log", "slurmd.log")


@dataclass
class Slurm:
    """The running cluster: its configuration, environment and a few helpers around the SLURM commands."""

    root: Path
    conf: Path
    node: str
    cpus: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that talks to this cluster (the SLURM commands read ``SLURM_CONF``)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """One SLURM command against this cluster."""
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def sbatch(self, *args: str) -> str:
        """Submit a batch job (``--parsable``); returns its job id."""
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def jobs(self, job: str | None = None) -> dict[str, dict[str, str]]:
        """``scontrol show job -o``, one dict per job or array task, by id (``12`` or ``12_3``)."""
        done = self.run("scontrol", "show", "job", "-o", *([job] if job else []), check=False)
        found = {}
        for line in done.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" not in fields:
                continue
            key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}" if fields.get("ArrayTaskId") else fields["JobId"]
            found[key] = fields
        return found

    def states(self, job: str) -> dict[str, str]:
        """Job state by job or array-task id, e.g. ``{"12_0": "COMPLETED", "12_1": "RUNNING"}``."""
        return {key: fields["JobState"] for key, fields in self.jobs(job).items()}

    def wait_until(self, condition: Callable[[], object], timeout: float, what: str, every: float = 0.2):
        """Poll ``condition`` until it returns something true; fail with ``what`` and the logs after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; SLURM state:\n{self.describe()}")

    def wait_final(self, job: str, timeout: float = 120) -> dict[str, str]:
        """Wait until every task of ``job`` is in a final state (and none pending); returns the states."""

        def final() -> dict[str, str] | None:
            states = self.states(job)
            return states if states and all(s in FINAL for s in states.values()) else None

        return self.wait_until(final, timeout, f"job {job} to end")

    def scancel(self, *jobs: str) -> None:
        self.run("scancel", *jobs)

    def node_down(self, reason: str = "fault test") -> None:
        self.run("scontrol", "update", f"nodename={self.node}", "state=down", f"reason={reason}")

    def node_resume(self) -> None:
        self.run("scontrol", "update", f"nodename={self.node}", "state=resume")
        self.wait_until(self.node_idle, 60, f"node {self.node} back in service")

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).stdout.strip()

    def node_idle(self) -> bool:
        return self.node_state() in ("idle", "mixed", "allocated")

    def cancel_all(self, timeout: float = 60) -> None:
        """Cancel every job of this cluster and wait until none is left running."""
        ids = self.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
        if ids:
            self.run("scancel", *sorted(set(ids)), check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%A", check=False).stdout.strip():
                time.sleep(0.5)

    def describe(self) -> str:
        """squeue, sinfo and the tails of the daemon logs: what a failure report needs."""
        parts = [f"SLURM folder (kept): {self.root}"]
        for args in (("sinfo", "-N", "-l"), ("squeue", "-l")):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                parts.append(f"$ {' '.join(args)}\n{self.run(*args, check=False, timeout=10).stdout}")
        for name in _LOG_NAMES:
            path = self.root / "log" / name
            if path.is_file():
                parts.append(f"--- {path} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(parts)


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    text = Path("/proc/meminfo").read_text()
    return int(int(re.search(r"MemTotal:\s+(\d+) kB", text)[1]) / 1024 * 0.9)


def write_conf(root: Path, node: str, cpus: int) -> Path:
    """slurm.conf of a one-node cluster on 127.0.0.1 with everything under ``root``."""
    ctld_port, d_port = _free_ports(2)
    conf = root / "slurm.conf"
    # cred_expire: also the delay before a requeued job may start again (120 s by default)
    conf.write_text(f"""\
ClusterName=rootletstest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=1
MailProg=/bin/true
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/spool
StateSaveLocation={root}/state
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
InactiveLimit=0
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
    return conf


def _cannot(reason: str) -> None:
    """Skip, or fail where SLURM is required (CI after installing it)."""
    need("slurm", False, f"no local SLURM: {reason}")


def _die_with_parent() -> None:
    """In the daemon (before exec): SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


def _start(cluster: Slurm, name: str, args: list[str]) -> None:
    with open(cluster.root / "log" / f"{name}.out", "w") as out:
        cluster.procs[name] = subprocess.Popen(args, env=cluster.env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def _check_alive(cluster: Slurm) -> None:
    for name, proc in cluster.procs.items():
        if proc.poll() is not None:
            tail = (cluster.root / "log" / f"{name}.out").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}\n{cluster.describe()}")


def start(root: Path) -> Slurm:
    """Start munged, slurmctld and slurmd in ``root``; returns once the node is idle (raises if it does not get so)."""
    for sub in ("munge", "spool", "state", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cluster = Slurm(root=root, conf=write_conf(root, node, os.cpu_count() or 1), node=node, cpus=os.cpu_count() or 1)
    key = root / "munge" / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    _start(cluster, "munged", ["munged", "-F", "--force", f"--socket={root}/munge/munge.socket", f"--key-file={key}",
                               f"--log-file={root}/log/munged.log", f"--pid-file={root}/munge/munged.pid",
                               f"--seed-file={root}/munge/munged.seed"])
    try:
        _wait(lambda: (root / "munge" / "munge.socket").exists(), 20, cluster, "munged socket")
        _start(cluster, "slurmctld", ["slurmctld", "-D", "-f", str(cluster.conf)])
        _wait(lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0, 30, cluster, "slurmctld")
        _start(cluster, "slurmd", ["slurmd", "-D", "-N", node, "-f", str(cluster.conf)])
        _wait(cluster.node_idle, 60, cluster, f"node {node} idle")
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _wait(condition: Callable[[], object], timeout: float, cluster: Slurm, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(cluster)
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready after {timeout} s\n{cluster.describe()}")


def stop(cluster: Slurm) -> None:
    """Cancel the jobs, then stop slurmd, slurmctld and munged by PID (SIGTERM, then SIGKILL after 15 s)."""
    if all(p.poll() is None for p in cluster.procs.values()) and cluster.procs:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cluster.cancel_all()
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


_FAILED = pytest.StashKey[list]()
_CLUSTER = pytest.StashKey[Slurm]()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Slurm]:
    """The session's single-node SLURM (see the module doc); skipped with the reason where it cannot run."""
    if os.geteuid() != 0:
        _cannot("the daemons need root (SlurmUser=root, munged --force); run the tests as root, as CI does")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        _cannot(f"{', '.join(missing)} not found; install Debian's slurm-wlm and munge (.ci/run does as root)")
    root = tmp_path_factory.mktemp("slurm", numbered=True)
    try:
        cluster = start(root)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _cannot(f"the daemons did not start ({exc})"[:4000])
    request.config.stash[_CLUSTER] = cluster
    yield cluster
    stop(cluster)
    if not request.config.stash.get(_FAILED, []):
        shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that used the cluster gets its state and daemon logs in the report; the folder is kept."""
    outcome = yield
    report = outcome.get_result()
    cluster = item.config.stash.get(_CLUSTER, None)
    if report.failed and cluster is not None and "slurm" in getattr(item, "fixturenames", ()):
        item.config.stash.setdefault(_FAILED, []).append(item.nodeid)
        report.sections.append(("SLURM", cluster.describe()))
