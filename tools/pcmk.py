"""A real 2-node Pacemaker + corosync cluster on one machine, with diskhb under it.

    node i: ip netns exec <ns i> unshare --uts --mount --pid --fork --mount-proc --kill-child -- sh node.sh
            PID 1 of the node (a shell) mounts, in its private mount namespace: tmpfs on /run and
            /dev/shm; its own /var/lib/pacemaker, /var/lib/corosync, /var/log/{pacemaker,corosync}
            and /etc/corosync (bind mounts of directories under the work dir); overlays over
            /usr/sbin (fence_diskhb) and /usr/lib/ocf/resource.d (diskhb/guard) that vanish with the
            namespace (nothing is ever written under /usr). It then starts the diskhb daemon,
            corosync (knet over a veth link, two_node) and pacemakerd.
    shared: the diskhb region (a file), an ext4 filesystem on a loop device (/dev/loopN: both
            nodes see it; each node's mount of it lives in its own mount namespace).
    watchdog: each node's FUSE watchdog (tools.fusewatchdog) resets (SIGKILLs) the node's PID 1.

Pacemaker: stonith device fence_diskhb (runs through the local diskhb daemon; or fence_sbd on a
second loop device, for comparison), a group guard (ocf:diskhb:guard) -> fs
(ocf:heartbeat:Filesystem) preferring n1 (score 50, no stickiness). Faults: SIGKILL of a node's
PID 1 (kill_node) or SIGSTOP of all its processes (freeze_node: its watchdog then resets it);
clean moves with the standby attribute. Everything is torn down by close(),
pass or fail: namespaces' PID 1 killed by PID, FUSE watchdogs unmounted, loop device detached,
network namespaces deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from tools import netns
from tools.procs import alive, children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISKHB = [sys.executable, "-m", "diskhb.cli"]
NODES = (1, 2)
CLUSTER = "pcmkt"
RESOURCE = "fs0"
INTERVAL_MS, DEAD_MS, WATCHDOG_S, MMP_INTERVAL_MS = 100, 1000, 1, 1000
CONFIG = "/run/diskhb/diskhb.toml"  # inside each node (its private /run)
TOOLS = ("unshare", "nsenter", "ip", "corosync", "pacemakerd", "cibadmin", "crm_mon", "crm_attribute",
         "stonith_admin", "losetup", "mkfs.ext4", "mount")
FILESYSTEM_RA = "/usr/lib/ocf/resource.d/heartbeat/Filesystem"

NODE_SH = r"""#!/bin/sh
# PID 1 of node $1 (work dir $2): its private mounts, then diskhb, corosync, pacemakerd.
I=$1; W=$2; D=$W/n$I
set -e
hostname n$I
# $6: directories (':'-separated) below one only root can enter (/root/.pyenv, a checkout in a
# mktemp -d directory): each is shown alone on a tmpfs over that parent, for hacluster
k=0; for x in $(echo "$6" | tr ':' ' '); do k=$((k+1)); mkdir -p "$D/expose$k"; mount --bind "$x" "$D/expose$k"; done
k=0; covered=""
for x in $(echo "$6" | tr ':' ' '); do
  k=$((k+1)); p=$(dirname "$x")
  case " $covered " in *" $p "*) ;; *) mount -t tmpfs -o mode=755 tmpfs "$p"; covered="$covered $p";; esac
  mkdir -p "$x"; mount --bind "$D/expose$k" "$x"
done
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
for m in lib/pacemaker lib/corosync log/pacemaker log/corosync; do
  mount --bind "$D/$(echo $m | tr / -)" "/var/$m"
done
mount --bind "$D/etc-corosync" /etc/corosync
mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$D/sbin-up,workdir=$D/sbin-work" /usr/sbin
mount -t overlay overlay -o "lowerdir=/usr/lib/ocf/resource.d,upperdir=$D/ocf-up,workdir=$D/ocf-work" \
  /usr/lib/ocf/resource.d
mkdir -p /run/corosync /run/crm /run/lock /run/diskhb
chown hacluster:haclient /run/crm
cp "$D/diskhb.toml" /run/diskhb/diskhb.toml
set +e
echo ready > "$D/mounted"
PYTHONPATH=$3 "$4" -m diskhb.cli run --config /run/diskhb/diskhb.toml > "$D/diskhb.log" 2>&1 &
i=0; while [ ! -S /run/diskhb/diskhb-$5-$I.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
corosync -f > "$D/corosync.out" 2>&1 &
i=0; while ! corosync-cfgtool -s >/dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
PCMK_logfile=/var/log/pacemaker/pacemaker.log pacemakerd > "$D/pacemakerd.out" 2>&1 &
while :; do wait; sleep 1; done
"""

COROSYNC_CONF = """totem {{
  version: 2
  cluster_name: {cluster}
  transport: knet
  crypto_cipher: none
  crypto_hash: none
}}
nodelist {{
{nodes}}}
quorum {{
  provider: corosync_votequorum
  two_node: 1
}}
logging {{
  to_stderr: yes
  to_logfile: yes
  logfile: /var/log/corosync/corosync.log
  to_syslog: no
  timestamp: hires
}}
"""


def missing() -> str | None:
    """None if the cluster can run here, else what is missing (the reason to skip)."""
    why = netns.available()
    if why:
        return why
    for t in TOOLS:
        if not shutil.which(t):
            return f"needs {t} (Debian packages pacemaker, pacemaker-cli-utils, corosync, util-linux, e2fsprogs)"
    if not os.path.exists(FILESYSTEM_RA):
        return f"needs {FILESYSTEM_RA} (Debian package resource-agents)"
    try:
        import pwd

        pwd.getpwnam("hacluster")
    except KeyError:
        return "needs the hacluster user (Debian package pacemaker)"
    return None


def _hidden_dir(path: str) -> str | None:
    """The child, on the way to `path`, of the first directory others cannot enter, or None."""
    parts = os.path.realpath(path).split("/")[1:]
    for k in range(1, len(parts)):
        parent = "/" + "/".join(parts[:k])
        if not os.stat(parent).st_mode & 0o001:
            return parent.rstrip("/") + "/" + parts[k]
    return None


def hidden_dirs() -> str:
    """What hacluster must reach but cannot (Pacemaker runs agents' meta-data as hacluster): the
    Python install (say /root/.pyenv below /root) and this checkout with its venv (a mktemp -d
    clone is 0700); each node shows these, alone, on a tmpfs over their parent in its own mount
    namespace. ':'-separated, '' for none."""
    out: list[str] = []
    for p in (sys.executable, ROOT):
        d = _hidden_dir(p)
        if d is not None and d not in out and not any(d.startswith(o + "/") for o in out):
            out.append(d)
    return ":".join(out)


def _run(argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r


class Audit:
    """Which nodes have the filesystem mounted, every `period` s, from each node's PID 1
    mountinfo; `overlaps` counts samples with two mounts."""

    def __init__(self, cluster: "PcmkCluster", period: float = 0.1):
        self.c, self.period = cluster, period
        self.samples = 0
        self.overlaps: list[float] = []
        self.first_seen: dict[int, float] = {}
        self.last: set[int] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, name="pcmk-audit", daemon=True)

    def __enter__(self) -> "Audit":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            m = {i for i in NODES if self.c.mounted(i)}
            self.samples += 1
            if len(m) > 1:
                self.overlaps.append(now)
            for i in m - self.last:
                self.first_seen[i] = now
            self.last = m
            self._stop.wait(self.period)


class PcmkCluster:
    def __init__(self, work: str, net_no: int = 30, fencing: str = "diskhb"):
        """fencing: "diskhb" (fence_diskhb) or "sbd" (fence_sbd on its own loop device: the
        comparison; the nodes run no sbd daemon, so it only times the fencing of a dead node)."""
        if fencing not in ("diskhb", "sbd"):
            raise ValueError(f"fencing {fencing!r}: diskhb or sbd")
        self.fencing = fencing
        self.sbd_loop: str | None = None
        self.work = work
        self.net = netns.TestNet(len(NODES), net=net_no)
        self.mnt = os.path.join(work, "mnt")
        self.dogs: dict = {}
        self.inits: dict[int, subprocess.Popen] = {}
        self.init_pid: dict[int, int] = {}
        self.loop: str | None = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------------------------------

    def _setup(self) -> None:
        from tools.fusewatchdog import FuseWatchdog

        w = self.work
        os.makedirs(self.mnt, exist_ok=True)
        os.chmod(w, 0o755)
        self.region = os.path.join(w, "region.img")
        _run(DISKHB + ["format", self.region, "--cluster", CLUSTER, "--slots", "4", "--interval-ms",
                       str(INTERVAL_MS), "--dead-ms", str(DEAD_MS), "--mmp-resources", "4",
                       "--watchdog-timeout-s", str(WATCHDOG_S)], cwd=ROOT)
        fs = os.path.join(w, "fs.img")
        with open(fs, "wb") as f:
            f.truncate(64 << 20)
        _run(["mkfs.ext4", "-q", "-F", fs])
        self.loop = _run(["losetup", "-f", "--show", fs]).stdout.strip()
        if self.fencing == "sbd":
            img = os.path.join(w, "sbd.img")
            with open(img, "wb") as f:
                f.truncate(8 << 20)
            self.sbd_loop = _run(["losetup", "-f", "--show", img]).stdout.strip()
            _run(["sbd", "-d", self.sbd_loop, "create"])
            for i in NODES:
                _run(["sbd", "-d", self.sbd_loop, "allocate", f"n{i}"])
        bindir = os.path.join(w, "bin")
        os.makedirs(bindir)
        for name, module in (("diskhb", "diskhb.cli"), ("fence_diskhb", "diskhb.pacemaker.fence_agent")):
            with open(os.path.join(bindir, name), "w") as f:
                f.write(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m {module} "$@"\n')
            os.chmod(os.path.join(bindir, name), 0o755)
        self.diskhb_bin = os.path.join(bindir, "diskhb")
        with open(os.path.join(w, "node.sh"), "w") as f:
            f.write(NODE_SH)
        nodes = "".join(f"  node {{\n    name: n{i}\n    nodeid: {i}\n    ring0_addr: {self.net.addr(i)}\n  }}\n"
                        for i in NODES)
        for i in NODES:
            d = self.node_dir(i)
            for sub in ("lib-pacemaker/cib", "lib-pacemaker/pengine", "lib-pacemaker/blackbox",
                        "lib-pacemaker/cores", "lib-corosync", "log-pacemaker/bundles", "log-corosync",
                        "etc-corosync", "sbin-up", "sbin-work", "ocf-up/diskhb", "ocf-work"):
                os.makedirs(os.path.join(d, sub))
            for sub in ("lib-pacemaker", "log-pacemaker"):
                _run(["chown", "-R", "hacluster:haclient", os.path.join(d, sub)])
            shutil.copy(os.path.join(bindir, "fence_diskhb"), os.path.join(d, "sbin-up", "fence_diskhb"))
            shutil.copy(os.path.join(ROOT, "contrib", "ocf", "guard"), os.path.join(d, "ocf-up", "diskhb", "guard"))
            os.chmod(os.path.join(d, "ocf-up", "diskhb", "guard"), 0o755)
            with open(os.path.join(d, "etc-corosync", "corosync.conf"), "w") as f:
                f.write(COROSYNC_CONF.format(cluster=CLUSTER, nodes=nodes))
        self.net.up()
        self.net.static_neighbours()
        for i in NODES:  # mounted before the nodes start: each node's mount namespace copies them
            self.dogs[i] = FuseWatchdog(os.path.join(w, f"wd{i}")).start()
        for i in NODES:
            with open(os.path.join(self.node_dir(i), "diskhb.toml"), "w") as f:
                f.write(f'[node]\nname = "n{i}"\nid = {i}\nrun_dir = "/run/diskhb"\n[metrics]\nlisten = ""\n'
                        f'[quorum]\nnodes = [1, 2]\ntwo_node = true\n'
                        f'[watchdog]\ndevice = "{self.dogs[i].path}"\ntimeout_s = {WATCHDOG_S}\n'
                        f'[[resource]]\nname = "{RESOURCE}"\ninterval_ms = {MMP_INTERVAL_MS}\n'
                        f'on_loss = ["kill"]\nmountpoint = "{self.mnt}"\n'
                        f'[[region]]\ntype = "disk"\nname = "disk"\npath = "{self.region}"\n')

    def node_dir(self, i: int) -> str:
        return os.path.join(self.work, f"n{i}")

    def start(self) -> None:
        for i in NODES:
            self.start_node(i)

    def start_node(self, i: int) -> None:
        """Node i's namespaces and daemons. Its watchdog must be quiet first: a reset still due
        from the node before (armed by its killed daemon) would hit this one."""
        d = self.node_dir(i)
        self.dogs[i].set_reset_pid(0)
        deadline = time.monotonic() + 5
        while self.dogs[i].state().get("armed") and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, "mounted"))
        cmd = self.net.exec_prefix(i) + [
            "unshare", "--uts", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
            "--kill-child", "--", "sh", os.path.join(self.work, "node.sh"), str(i), self.work, ROOT,
            sys.executable, CLUSTER, hidden_dirs()]
        out = open(os.path.join(d, "init.out"), "a")
        self.inits[i] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + 10
        while not children(self.inits[i].pid):
            if self.inits[i].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {i}: its namespace did not start (see {d}/init.out)")
            time.sleep(0.01)
        self.init_pid[i] = children(self.inits[i].pid)[0]
        while not os.path.exists(os.path.join(d, "mounted")):
            if not alive(self.init_pid[i]) or time.monotonic() > deadline:
                raise RuntimeError(f"node {i}: its mounts failed (see {d}/init.out)")
            time.sleep(0.05)
        self.dogs[i].set_reset_pid(self.init_pid[i])

    # -- inside a node ------------------------------------------------------------------------------

    def exec(self, i: int, *argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["nsenter", "-t", str(self.init_pid[i]), "-n", "-m", "-u", "-p", "--", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"n{i}: {' '.join(argv)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}")
        return r

    def node_up(self, i: int) -> bool:
        p = self.init_pid.get(i)
        return bool(p) and alive(p)

    def mounted(self, i: int) -> bool:
        p = self.init_pid.get(i)
        if not p:
            return False
        try:
            with open(f"/proc/{p}/mountinfo") as f:
                return any(line.split()[4] == self.mnt for line in f)
        except (OSError, IndexError):
            return False

    def crm_mon(self, i: int) -> str:
        r = self.exec(i, "crm_mon", "-1", "-r", check=False, timeout=20)
        return r.stdout + r.stderr

    def online(self, i: int) -> set[str]:
        for line in self.crm_mon(i).splitlines():
            line = line.strip()
            if line.startswith("* Online: ["):
                return set(line.split("[", 1)[1].rstrip("]").split())
        return set()

    def where(self, i: int, rsc: str = "fs") -> str | None:
        r = self.exec(i, "crm_resource", "--locate", "-r", rsc, check=False, timeout=20)
        for line in r.stdout.splitlines():
            if "is running on:" in line:
                return line.rsplit(":", 1)[1].strip()
        return None

    def configure(self, i: int = 1) -> None:
        """Properties, the fence device and the group, loaded through cibadmin on node i."""
        for name, value in (("stonith-enabled", "true"), ("stonith-timeout", "60s")):
            self.exec(i, "crm_attribute", "--type", "crm_config", "--name", name, "--update", value)
        cfg = CONFIG
        if self.fencing == "sbd":
            stonith = f"""  <primitive id="fence-sbd" class="stonith" type="fence_sbd">
    <instance_attributes id="fence-sbd-ia">
      <nvpair id="fence-sbd-devices" name="devices" value="{self.sbd_loop}"/>
      <nvpair id="fence-sbd-hosts" name="pcmk_host_list" value="n1 n2"/>
    </instance_attributes>
    <operations><op id="fence-sbd-mon" name="monitor" interval="30s" timeout="20s"/></operations>
  </primitive>
"""
        else:
            stonith = f"""  <primitive id="fence-diskhb" class="stonith" type="fence_diskhb">
    <instance_attributes id="fence-diskhb-ia">
      <nvpair id="fence-diskhb-config" name="config" value="{cfg}"/>
      <nvpair id="fence-diskhb-hosts" name="pcmk_host_list" value="n1 n2"/>
    </instance_attributes>
    <operations><op id="fence-diskhb-mon" name="monitor" interval="30s" timeout="20s"/></operations>
  </primitive>
"""
        xml = f"""<resources>
{stonith}  <group id="grp">
    <primitive id="guard" class="ocf" provider="diskhb" type="guard">
      <instance_attributes id="guard-ia">
        <nvpair id="guard-resource" name="resource" value="{RESOURCE}"/>
        <nvpair id="guard-config" name="config" value="{cfg}"/>
        <nvpair id="guard-binary" name="binary" value="{self.diskhb_bin}"/>
      </instance_attributes>
      <operations>
        <op id="guard-start" name="start" interval="0" timeout="60s"/>
        <op id="guard-stop" name="stop" interval="0" timeout="60s"/>
        <op id="guard-mon" name="monitor" interval="5s" timeout="30s"/>
      </operations>
    </primitive>
    <primitive id="fs" class="ocf" provider="heartbeat" type="Filesystem">
      <instance_attributes id="fs-ia">
        <nvpair id="fs-device" name="device" value="{self.loop}"/>
        <nvpair id="fs-dir" name="directory" value="{self.mnt}"/>
        <nvpair id="fs-type" name="fstype" value="ext4"/>
      </instance_attributes>
      <operations>
        <op id="fs-start" name="start" interval="0" timeout="60s"/>
        <op id="fs-stop" name="stop" interval="0" timeout="60s"/>
        <op id="fs-mon" name="monitor" interval="10s" timeout="40s"/>
      </operations>
    </primitive>
  </group>
</resources>"""
        self.exec(i, "cibadmin", "--replace", "--scope", "resources", "--xml-text", xml)
        self.exec(i, "cibadmin", "--replace", "--scope", "constraints", "--xml-text",
                  '<constraints><rsc_location id="grp-prefers-n1" rsc="grp" node="n1" score="50"/></constraints>')

    def standby(self, node: str, on: bool, via: int) -> None:
        self.exec(via, "crm_attribute", "--node", node, "--name", "standby", "--update", "on" if on else "off")

    def wait(self, what, timeout: float, why: str, period: float = 0.2):
        """what() until it is truthy (returned), or RuntimeError naming `why` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            v = what()
            if v:
                return v
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {why}")
            time.sleep(period)

    def fence_history(self, i: int) -> str:
        return self.exec(i, "stonith_admin", "--history", "*", check=False, timeout=20).stdout

    def kill_node(self, i: int) -> float:
        """SIGKILL node i's PID 1 (its whole PID namespace goes with it); the monotonic time."""
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid[i], signal.SIGKILL)
        return t

    def freeze_node(self, i: int) -> float:
        """SIGSTOP every process of node i (its PID 1 last); the monotonic time. Its diskhb daemon
        no longer feeds its watchdog, which then resets (SIGKILLs) the node's PID 1."""
        t = time.monotonic()
        subprocess.run(["nsenter", "-t", str(self.init_pid[i]), "-p", "-m", "--", "kill", "-STOP", "-1"],
                       capture_output=True, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid[i], signal.SIGSTOP)
        return t

    def failover(self, victim: int, survivor: int, timeout: float = 60, how: str = "kill") -> float:
        """SIGKILL the victim's namespace (how="kill") or freeze it ("freeze"); seconds until the
        survivor has the filesystem mounted (its mountinfo polled every 20 ms)."""
        t0 = self.kill_node(victim) if how == "kill" else self.freeze_node(victim)
        self.wait(lambda: self.mounted(survivor), timeout, f"the filesystem mounted on n{survivor}", period=0.02)
        return time.monotonic() - t0

    def fences(self, i: int) -> list[str]:
        """Node i's fencing history, one line per operation ("reboot of n1 successful: ...")."""
        return [line.strip() for line in self.fence_history(i).splitlines() if " of n" in line]

    # -- teardown -----------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            for i, dog in self.dogs.items():
                with contextlib.suppress(Exception):
                    dog.set_reset_pid(0)
            for i, p in self.init_pid.items():
                if alive(p):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            for p in self.inits.values():
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(15)
            self.inits.clear()
        finally:
            try:
                for dog in self.dogs.values():
                    with contextlib.suppress(Exception):
                        dog.close()
                self.dogs.clear()
            finally:
                try:
                    for loop in (self.loop, self.sbd_loop):
                        if not loop:
                            continue
                        deadline = time.monotonic() + 15
                        while subprocess.run(["losetup", "-d", loop], capture_output=True).returncode != 0 \
                                and time.monotonic() < deadline:
                            time.sleep(0.2)
                    self.loop = self.sbd_loop = None
                finally:
                    self.net.down()
