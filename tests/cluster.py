"""Test helper: daemons as real processes over one region, always torn down (by PID)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISKHB = [sys.executable, "-m", "diskhb.cli"]


# Root without the capabilities that let it ignore file modes: a file owned by someone else
# with mode 0600 is then "permission denied" to us. Unlike running as nobody, this works
# wherever the checkout lives (a mktemp -d clone is 0700, unreadable to nobody).
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def keep_from_root(path: str) -> None:
    """Make `path` unreadable and unwritable for a WITHOUT_DAC process."""
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o600)


def diskhb(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(DISKHB + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels` (None if none)."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def wait_until(pred, timeout_s: float, what: str, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)


class Cluster:
    def __init__(self, workdir: str, region: str, *, extra_regions: tuple[str, ...] = ()):
        self.workdir = workdir
        self.region = region
        self.extra_regions = extra_regions
        self.run_dir = os.path.join(workdir, "run")
        self.procs: dict[int, subprocess.Popen] = {}  # the newest process per node id
        self.all_procs: list[subprocess.Popen] = []  # every process started, so none outlives the test
        self.logs: dict[int, str] = {}
        self.ports: dict[int, int] = {}

    def config(self, node_id: int, name: str | None = None, extra: str = "", node_extra: str = "") -> str:
        """node_extra: more [node] keys (lines); extra: more tables."""
        path = os.path.join(self.workdir, f"node{node_id}.toml")
        port = self.ports.setdefault(node_id, free_port())
        regions = "".join(f'[[region]]\ntype = "disk"\npath = "{r}"\n' for r in (self.region, *self.extra_regions))
        with open(path, "w") as f:
            f.write(f'[node]\nname = "{name or f"node{node_id}"}"\nid = {node_id}\nrun_dir = "{self.run_dir}"\n'
                    f'{node_extra}[metrics]\nlisten = "127.0.0.1:{port}"\n{extra}{regions}')
        return path

    def start(self, node_id: int, name: str | None = None, extra: str = "", node_extra: str = "") -> subprocess.Popen:
        # node_extra only when given: subclasses of other tests write configs of their own
        cfg = self.config(node_id, name, extra, node_extra) if node_extra else self.config(node_id, name, extra)
        log = os.path.join(self.workdir, f"node{node_id}.{len(self.logs)}.log")
        self.logs[node_id] = log
        with open(log, "w") as out:
            p = subprocess.Popen(DISKHB + ["run", "--config", cfg], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[node_id] = p
        self.all_procs.append(p)
        return p

    def log(self, node_id: int) -> str:
        with open(self.logs[node_id]) as f:
            return f.read()

    def view(self, node_id: int) -> dict | None:
        """The daemon's own snapshot via its control socket (None while it is not up)."""
        from diskhb.control import ControlError, request

        path = os.path.join(self.run_dir, f"diskhb-{self.cluster_name()}-{node_id}.sock")
        try:
            return request(path, "status", 5)
        except ControlError:
            return None

    def cluster_name(self) -> str:
        return "test"

    def state_of(self, observer: int, node_id: int) -> str | None:
        v = self.view(observer)
        if not v:
            return None
        for n in v["nodes"]:
            if n["id"] == node_id:
                return n["state"]
        return None

    def wait_state(self, observer: int, node_id: int, state: str, timeout_s: float = 15) -> None:
        wait_until(lambda: self.state_of(observer, node_id) == state, timeout_s,
                   f"node {observer} to see node {node_id} {state}")

    def kill(self, node_id: int, sig=signal.SIGKILL) -> None:
        p = self.procs[node_id]
        p.send_signal(sig)
        p.wait(15)

    def stop_all(self) -> None:
        for p in self.all_procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.all_procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def faultdisk_missing() -> str | None:
    """What FUSE-based test tools (tools.faultdisk, tools.fusewatchdog) lack here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse"
    if not shutil.which("fusermount3"):
        return "fusermount3 (Debian package fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy (pip install -e '.[test]')"
    return None
