"""A throw-away one-node SLURM cluster on this machine, for tests/test_slurm.py.

munged, slurmctld and slurmd run in the foreground as children of the test process, so they are
stopped by their own PIDs; their state, spool, logs, munge key and socket live under a temporary
directory. Only the configuration has to be at SLURM's compiled-in path, /etc/slurm/slurm.conf
(+ gres.conf beside it): the executor plugin's job step strips SLURM_* variables, SLURM_CONF
included, so a config elsewhere would not be found inside the jobs. An existing slurm.conf that
this module did not write is never touched (`Cluster.blocked()` says why the test must skip).

By hand (as root):  python tests/slurm/cluster.py /tmp/slurmtest   (Ctrl-C stops the cluster)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
ETC = Path("/etc/slurm")
MARKER = "# written by repel's tests/test_slurm.py"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel", "srun")


def which(name: str) -> str | None:
    """A binary on PATH or in the sbin directories (not on a normal user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def blocked() -> str | None:
    """Why a test cluster cannot be started here, or None."""
    missing = [b for b in DAEMONS + CLIENTS if not which(b)]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} not found); "
            "on Debian/Ubuntu: apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        return "the SLURM test cluster must be started as root (it writes /etc/slurm/slurm.conf)"
    for conf in (ETC / "slurm.conf", ETC / "gres.conf"):
        if conf.exists() and not conf.read_text().startswith(MARKER):
            return f"{conf} exists and was not written by this test: not overwriting a real cluster's config"
    return None


def clean_env() -> dict:
    """os.environ without SLURM_* (a surrounding allocation's settings must not leak into ours)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


class Cluster:
    def __init__(
        self,
        root: Path,
        partition: str = "test",
        node: str = "repelnode",
        gpu_type: str = "fake",
        ctld_port: int = 16817,
        slurmd_port: int = 16818,
    ):
        self.root = Path(root)
        self.partition, self.node, self.gpu_type = partition, node, gpu_type
        self.ctld_port, self.slurmd_port = ctld_port, slurmd_port
        self.procs: dict[str, subprocess.Popen] = {}
        self.outputs: dict = {}
        self.written: list[Path] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> Cluster:
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "munge", 0o755)  # clients of other users must reach the socket
        key = self.root / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self.munge_socket = self.root / "munge/munge.socket"
        self._spawn(
            "munged",
            [
                which("munged"),
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.root / 'munge/munged.pid'}",
                f"--seed-file={self.root / 'munge/munged.seed'}",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), 10, "munged's socket")
        self._write_config()
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i"])
        self._spawn("slurmd", [which("slurmd"), "-D", "-N", self.node])
        self._wait(lambda: self.node_state() == "idle", timeout, f"node {self.node} to become idle")
        return self

    def stop(self) -> None:
        """Cancel what is left of our jobs, stop the daemons we started, remove our config."""
        try:
            if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
                ids = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
                if ids:  # only this cluster's jobs: it is ours
                    self.run("scancel", *ids, check=False)
                    self._wait(
                        lambda: not self.run("squeue", "-h", "-t", "R,CG", "-o", "%i", check=False).stdout.split(),
                        30,
                        None,
                    )
        except (OSError, subprocess.SubprocessError):
            pass  # stop the daemons anyway
        for name in reversed(list(self.procs)):  # slurmd, slurmctld, munged
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            self.outputs.pop(name).close()
        for path in self.written:
            if path.exists() and path.read_text().startswith(MARKER):
                path.unlink()
        self.written.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- queries -------------------------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [which(cmd[0]), *cmd[1:]], capture_output=True, text=True, env=clean_env(), check=check, timeout=60
        )

    def node_state(self) -> str:
        result = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge s): id -> its fields."""
        out = self.run("scontrol", "-o", "show", "job").stdout
        jobs = {}
        for line in out.splitlines():
            if line.startswith("JobId="):
                fields = dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line))
                jobs[fields["JobId"]] = fields
        return jobs

    def jobcomp(self) -> dict[str, str]:
        """slurmctld's job completion records (jobcomp/filetxt): id -> the record's line."""
        path = self.root / "log/jobcomp.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return {m[1]: line for line in lines if (m := re.match(r"JobId=(\d+) ", line))}

    def logs(self, tail: int = 3000) -> str:
        """The daemons' output, for assertion messages."""
        parts = []
        for name in DAEMONS:
            path = self.root / f"log/{name}.out"
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text()[-tail:]}")
        return "\n".join(parts)

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> None:
        self.outputs[name] = out = open(self.root / f"log/{name}.out", "w")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, env=clean_env(), start_new_session=True
        )

    def _wait(self, ready, timeout: float, what: str | None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead and what:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            time.sleep(0.5)
        if what:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    def _hardware(self) -> str:
        """This machine's node line from `slurmd -C` (CPUs, sockets, cores, threads, memory)."""
        out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
        keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        memory = int(fields["RealMemory"]) * 9 // 10  # below what slurmd finds, or the node is INVALID
        return " ".join(f"{k}={fields[k]}" for k in keys if k in fields) + f" RealMemory={memory}"

    def _write_config(self) -> None:
        values = dict(
            host=socket.gethostname(),
            root=self.root,
            node=self.node,
            partition=self.partition,
            gpu_type=self.gpu_type,
            ctld_port=self.ctld_port,
            slurmd_port=self.slurmd_port,
            munge_socket=self.munge_socket,
            hardware=self._hardware(),
        )
        ETC.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            target = ETC / name
            if target.exists() and not target.read_text().startswith(MARKER):
                raise RuntimeError(f"{target} exists and was not written by this test")
            target.write_text(Template((HERE / f"{name}.in").read_text()).substitute(values))
            self.written.append(target)


if __name__ == "__main__":
    import sys

    if reason := blocked():
        sys.exit(reason)
    with Cluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/slurmtest")) as cluster:
        print(cluster.run("sinfo").stdout, "Ctrl-C stops the cluster", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
