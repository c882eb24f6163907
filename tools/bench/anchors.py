"""The competitors, run side by side with diskhb's failover cases (issue 10's anchors).

    python -m tools.bench.failover --reps 3 --with-anchors [--sanlock-io-timeouts 2,10]
    python -m tools.bench.anchors [--reps 3] [--sanlock-reps 3] [--sanlock-io-timeouts 2]

Each competitor runs the real Debian tool (`apt-get install sbd sanlock`) on a loop device over a
file in /var/tmp; every process, loop device and file it made is ended in `finally`. A competitor
that cannot run here prints one line naming the command that failed and its error, and the bench
goes on.

sbd (its poison pill): `sbd -d DEV create` (on-disk defaults: watchdog 5 s, allocate 2 s, loop
1 s -- sbd sleeps whole seconds, so 1 s is its shortest loop --, msgwait 10 s), a watcher for node
"b" (`sbd -Z -Z -w /dev/null -n b -d DEV watch`), then per repetition, at a random phase of the
watcher's loop, `sbd -d DEV -n a message b test`. The watcher clears its mailbox right after it
logs "Received command test" (a `reset` is read by the same loop read), so the bench polls the
mailbox sector with O_DIRECT every 2 ms: sent -> test on disk -> cleared = seen by the victim.
Also: how long the sender blocks (it sleeps msgwait after writing).
Safety: only `test` messages are sent. The watcher runs with no watchdog (`-w /dev/null`), in
debug mode 2 (`-Z -Z`: any self-fence -- a timeout, its parent dying -- becomes "exit" or a log
line instead of sysrq + reboot(2); one -Z would be a kdump, so exactly two), and in its own PID and
mount namespace (`unshare --pid --fork --mount --mount-proc --kill-child`), where reboot(2) only
ends that namespace and /proc/sysrq-trigger (when the kernel has one) is bind-mounted over by a
plain file. The namespace is SIGKILLed whole before the loop device goes away.

sanlock (a dead host's resource lease): two daemons, host A and host B, on one machine, each with
its own SANLOCK_RUN_DIR (socket + lockfile) and `sanlock daemon -D -w 0 -e hostX -L -1 -S -1`
(no watchdog, log to its stderr only). SANLOCK_PRIVILEGED=0 when this process lacks
CAP_SYS_RESOURCE (privileged mode exits with "cannot set the limits for memlock 1" here; it also
skips SCHED_RR and mlockall). Per repetition on a fresh device: `sanlock direct init -s
bench:0:DEV:0 -o IO`, `sanlock direct init -r bench:R:DEV:1048576`, both hosts
`sanlock client add_lockspace -s bench:ID:DEV:0 -o IO` (timed), host A `sanlock client command
-r bench:R:DEV:1048576 -c /bin/sleep ...` holds the lease; then host A's daemon (and its helper
and the holder) are SIGKILLed and host B runs `sanlock client command -r ... -c /bin/true` until
it succeeds (a try blocks while A's delta lease may still be live): seconds from the kill until
B holds the lease. Expected: A's last renewal + 8 x IO + 60 s (the watchdog fire time sanlock
must assume), ~76 s at io_timeout 2, ~140 s at the default 10.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from tools.procs import cmdline

LEASE_OFFSET = 1048576  # resource lease after the 1 MiB lockspace (512-byte sectors)


class CannotRun(Exception):
    """A competitor cannot run here: str() is one line naming the command and its error."""


def line(name: str, xs: list[float]) -> str:
    return (f"{name}: min {min(xs):.3f} s, median {statistics.median(xs):.3f} s, max {max(xs):.3f} s"
            f" (n={len(xs)})")


def _one_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    return " | ".join(lines[-2:]) if lines else "(no output)"


def _run(cmd: list[str], timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError as e:
        raise CannotRun(f"`{' '.join(cmd)}` failed: {e}") from None
    except subprocess.TimeoutExpired:
        raise CannotRun(f"`{' '.join(cmd)}` failed: no answer in {timeout:.0f} s") from None
    if r.returncode != 0:
        raise CannotRun(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {_one_line(r.stderr + r.stdout)}")
    return r


def _need(tool: str, package: str) -> None:
    if not shutil.which(tool):
        raise CannotRun(f"`{tool}` not found: apt-get install {package}")


class LoopFile:
    """A zeroed file in /var/tmp attached to a loop device; close() detaches and removes it."""

    def __init__(self, prefix: str, size: int):
        if os.geteuid() != 0:
            raise CannotRun("`losetup -f --show` needs root")
        self.work = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
        self.dev = None
        try:
            self.image = os.path.join(self.work, "dev.img")
            with open(self.image, "wb") as f:
                f.truncate(size)
            self.dev = _run(["losetup", "-f", "--show", self.image], 30).stdout.strip()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], capture_output=True, timeout=30)
            self.dev = None
        shutil.rmtree(self.work, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_tree(p: subprocess.Popen, timeout: float = 15) -> None:
    """SIGKILL p and everything below it, reap p, and wait until all of them are gone."""
    pids = _descendants(p.pid) if p.poll() is None else []
    for pid in [p.pid] + pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + timeout
    while time.monotonic() < end and not all(_gone(pid) for pid in pids):
        time.sleep(0.05)


# ---------------------------------------------------------------- sbd

SANDBOX = r"""
for f in /proc/sysrq-trigger /proc/sys/kernel/sysrq; do
  if [ -e "$f" ]; then
    : > "$1/masked-$(basename "$f")"; [ "$f" = /proc/sys/kernel/sysrq ] && echo 1 > "$1/masked-sysrq"
    mount --bind "$1/masked-$(basename "$f")" "$f" || { echo "SANDBOX-FAILED masking $f"; exit 97; }
  fi
done
[ "$$" = 1 ] || { echo "SANDBOX-FAILED not pid 1 in a new pid namespace"; exit 98; }
shift
"$@"
echo "WATCH-RC=$?"
exec sleep 2147483647
"""


class SbdWatcher:
    """`sbd ... watch` for node "b" inside its own PID + mount namespace (see the module doc)."""

    def __init__(self, dev: str, work: str):
        _need("unshare", "util-linux")
        self.cmd = ["sbd", "-Z", "-Z", "-w", "/dev/null", "-n", "b", "-d", dev, "watch"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SBD_")}
        env.update(SBD_PACEMAKER="no", SBD_SYNC_RESOURCE_STARTUP="no", SBD_DELAY_START="no",
                   SBD_STARTMODE="always")
        self.log = os.path.join(work, "watch.log")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child",
                                          "sh", "-c", SANDBOX, "sandbox", work] + self.cmd,
                                         stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        end = time.monotonic() + 30
        while True:
            text = open(self.log).read()
            if "WATCH-RC=0" in text:
                break
            if "WATCH-RC=" in text or "SANDBOX-FAILED" in text or self.proc.poll() is not None:
                self.close()
                raise CannotRun(f"`{' '.join(self.cmd)}` (in unshare --pid --mount) failed: {_one_line(text)}")
            if time.monotonic() > end:
                self.close()
                raise CannotRun(f"`{' '.join(self.cmd)}` failed: not watching after 30 s: {_one_line(text)}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None and any("sbd: watcher" in cmdline(p) for p in _descendants(self.proc.pid))

    def close(self) -> None:
        _kill_tree(self.proc)


class Sector:
    """One sector of a block device read with O_DIRECT (no page cache between us and the disk)."""

    def __init__(self, dev: str, offset: int, size: int):
        self.fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        self.buf = mmap.mmap(-1, max(size, 4096))
        self.view, self.offset = memoryview(self.buf)[:size], offset

    def first_byte(self) -> int:
        os.preadv(self.fd, [self.view], self.offset)
        return self.buf[0]

    def close(self) -> None:
        self.view.release()
        self.buf.close()
        os.close(self.fd)


def bench_sbd(reps: int) -> dict[str, list[float]]:
    _need("sbd", "sbd")
    out: dict[str, list[float]] = {"create": [], "sent": [], "written": [], "blocked": []}
    loop = LoopFile("diskhb-anchor-sbd-", 4 << 20)
    watcher = mailbox = None
    try:
        dev = loop.dev
        t = time.monotonic()
        _run(["sbd", "-d", dev, "create"], 60)
        out["create"].append(time.monotonic() - t)
        dump = _run(["sbd", "-d", dev, "dump"]).stdout
        sector = int(next(x.split(":")[1] for x in dump.splitlines() if x.startswith("Sector size")))
        msgwait = int(next(x.split(":")[1] for x in dump.splitlines() if x.startswith("Timeout (msgwait)")))
        _run(["sbd", "-d", dev, "allocate", "b"])
        slot = int(next(x.split()[0] for x in _run(["sbd", "-d", dev, "list"]).stdout.splitlines()
                        if x.split()[1:2] == ["b"]))
        mailbox = Sector(dev, (2 + 2 * slot) * sector, sector)  # sbd: mailbox of slot n at sector 2 + 2n
        watcher = SbdWatcher(dev, loop.work)
        sender = ["sbd", "-d", dev, "-n", "a", "message", "b", "test"]
        for _ in range(reps):
            if not watcher.alive():
                raise CannotRun(f"`{' '.join(watcher.cmd)}` died: {_one_line(open(watcher.log).read())}")
            if mailbox.first_byte() != 0:
                raise CannotRun(f"b's mailbox is not clear before `{' '.join(sender)}`")
            time.sleep(random.uniform(0, 1.0))  # a random phase of the watcher's 1 s loop
            t0 = time.monotonic()
            p = subprocess.Popen(sender, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            on = seen = None
            deadline = t0 + msgwait + 30
            while seen is None and time.monotonic() < deadline:
                cmd = mailbox.first_byte()
                now = time.monotonic()
                if cmd and on is None:
                    on = now
                elif on is not None and not cmd:
                    seen = now
                else:
                    time.sleep(0.002)
            try:
                err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))[1]
            except subprocess.TimeoutExpired:
                p.kill()
                err = p.communicate()[1]
            done = time.monotonic()
            if p.returncode != 0:
                raise CannotRun(f"`{' '.join(sender)}` failed (exit {p.returncode}): {_one_line(err)}")
            if seen is None:
                raise CannotRun(f"`{' '.join(sender)}`: the watcher never took the message ({_one_line(err)})")
            out["sent"].append(seen - t0)
            out["written"].append(seen - on)
            out["blocked"].append(done - t0)
        return out
    finally:
        if mailbox:
            mailbox.close()
        if watcher:
            watcher.close()
        loop.close()


# ---------------------------------------------------------------- sanlock

def _has_cap(bit: int) -> bool:
    with open("/proc/self/status") as f:
        eff = next(x for x in f if x.startswith("CapEff:")).split()[1]
    return bool(int(eff, 16) >> bit & 1)


class SanlockHost:
    def __init__(self, name: str, work: str):
        self.name = name
        self.run_dir = os.path.join(work, name)
        os.makedirs(self.run_dir)
        self.env = dict(os.environ, SANLOCK_RUN_DIR=self.run_dir)
        if not _has_cap(24):  # CAP_SYS_RESOURCE: privileged mode sets unlimited rlimits or exits
            self.env["SANLOCK_PRIVILEGED"] = "0"
        self.cmd = ["sanlock", "daemon", "-D", "-w", "0", "-e", name, "-L", "-1", "-S", "-1"]
        self.log = os.path.join(work, f"{name}.log")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        self.holder: subprocess.Popen | None = None
        self.helpers: list[int] = []
        end = time.monotonic() + 20
        while subprocess.run(["sanlock", "client", "status"], env=self.env, capture_output=True,
                             timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.kill()
                raise CannotRun(f"`{' '.join(self.cmd)}` (SANLOCK_RUN_DIR={self.run_dir}) failed: "
                                f"{_one_line(open(self.log).read())}")
            time.sleep(0.05)
        self.helpers = _descendants(self.proc.pid)  # sanlock-helper, forked at start

    def client(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run(["sanlock", "client", *args], timeout, self.env)

    def hold(self, res: str) -> None:
        cmd = ["sanlock", "client", "command", "-r", res, "-c", "/bin/sleep", "1000000"]
        with open(self.log + ".holder", "w") as out:
            self.holder = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True)
        # Held = on disk: the paxos lease names host A (host_id 1) as owner (`client status` lists the
        # resource while the acquire is still running, and a kill then leaves it free).
        end = time.monotonic() + 30
        while _leader(res).get("owner_id") != "1" or _leader(res).get("timestamp", "0") == "0":
            if self.holder.poll() is not None or time.monotonic() > end:
                raise CannotRun(f"`{' '.join(cmd)}` failed: {_one_line(open(self.log + '.holder').read())}"
                                f" / leader {_leader(res)}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the daemon (first: that is the moment its host dies), its helper and its holder."""
        if self.proc.poll() is None:
            self.proc.kill()
        mine = " ".join(self.cmd)
        for pid in [p for p in self.helpers if cmdline(p).strip() == mine] + _descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_tree(self.proc)
        if self.holder:
            _kill_tree(self.holder)

    def stop(self) -> None:
        if self.proc.poll() is None:
            subprocess.run(["sanlock", "client", "shutdown", "-f", "1", "-w", "1"], env=self.env,
                           capture_output=True, timeout=30)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _leader(res: str) -> dict[str, str]:
    """The resource's paxos leader record as on disk (`sanlock direct read_leader`, O_DIRECT)."""
    r = _run(["sanlock", "direct", "read_leader", "-r", res], 30)
    return dict(x.split(None, 1) for x in r.stdout.splitlines() if len(x.split(None, 1)) == 2)


def sanlock_takeover(io_timeout: int) -> tuple[float, float]:
    """(add_lockspace, host A SIGKILLed -> host B holds A's resource lease), seconds; fresh device."""
    _need("sanlock", "sanlock")
    loop = LoopFile("diskhb-anchor-sanlock-", 3 << 20)
    hosts: list[SanlockHost] = []
    try:
        dev = loop.dev
        _run(["sanlock", "direct", "init", "-s", f"bench:0:{dev}:0", "-o", str(io_timeout)])
        res = f"bench:R:{dev}:{LEASE_OFFSET}"
        _run(["sanlock", "direct", "init", "-r", res])
        for name in ("hostA", "hostB"):
            hosts.append(SanlockHost(name, loop.work))
        a, b = hosts
        t = time.monotonic()
        adds = [subprocess.Popen(["sanlock", "client", "add_lockspace", "-s", f"bench:{i}:{dev}:0", "-o",
                                  str(io_timeout)], env=h.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for i, h in ((1, a), (2, b))]
        for p in adds:
            text = p.communicate(timeout=60 + 20 * io_timeout)[0]
            if p.returncode != 0 or "done 0" not in text:
                raise CannotRun(f"`{' '.join(p.args)}` failed (exit {p.returncode}): {_one_line(text)}")
        joined = time.monotonic() - t
        a.hold(res)
        t0 = time.monotonic()
        a.kill()
        take = ["sanlock", "client", "command", "-r", res, "-c", "/bin/true"]
        deadline = t0 + 16 * io_timeout + 120
        while True:
            try:
                r = subprocess.run(take, env=b.env, capture_output=True, text=True,
                                   timeout=max(5.0, deadline - time.monotonic() + 30))
            except subprocess.TimeoutExpired as e:
                r = subprocess.CompletedProcess(take, -1, str(e), "")
            if r.returncode == 0:
                taken = time.monotonic() - t0
                if _leader(res).get("owner_id") != "2":
                    raise CannotRun(f"`{' '.join(take)}` succeeded but the leader on disk names "
                                    f"{_leader(res).get('owner_id')}, not host B (2)")
                return joined, taken
            if b.proc.poll() is not None:
                raise CannotRun(f"`{' '.join(b.cmd)}` died: {_one_line(open(b.log).read())}")
            if time.monotonic() > deadline:
                raise CannotRun(f"`{' '.join(take)}` still refused {deadline - t0:.0f} s after the kill: "
                                f"{_one_line(r.stdout + r.stderr)}")
            time.sleep(0.2)
    finally:
        for h in hosts:
            h.stop()
        loop.close()


# ---------------------------------------------------------------- both

def run(reps: int, sanlock_reps: int, io_timeouts: list[int]) -> dict[str, list[float]]:
    """Run every competitor, print its lines (or one line saying why it cannot run here)."""
    results: dict[str, list[float]] = {}
    try:
        r = bench_sbd(reps)
        ver = _version(["dpkg-query", "-W", "-f", "${Version}", "sbd"])
        print(line(f"sbd {ver}: create", r["create"]), flush=True)
        print(line("sbd: `message b test` started -> victim's watcher took it (mailbox cleared)", r["sent"]),
              flush=True)
        print(line("sbd: test on disk -> victim's watcher took it", r["written"]), flush=True)
        print(line("sbd: sender blocked (msgwait)", r["blocked"]), flush=True)
        results.update({f"sbd {k}": v for k, v in r.items()})
    except CannotRun as e:
        print(f"sbd: cannot run here: {e}", flush=True)
    ver = _version(["sanlock", "version"])
    for io in io_timeouts:
        joined, taken = [], []
        try:
            for _ in range(sanlock_reps):
                j, t = sanlock_takeover(io)
                joined.append(j)
                taken.append(t)
                print(f"  sanlock io_timeout {io}: add_lockspace {j:.3f} s, takeover {t:.3f} s", flush=True)
            print(line(f"sanlock {ver} io_timeout {io}: add_lockspace (both hosts at once)", joined), flush=True)
            print(line(f"sanlock io_timeout {io}: host A SIGKILLed -> host B holds A's lease", taken), flush=True)
            results[f"sanlock{io} add_lockspace"] = joined
            results[f"sanlock{io} takeover"] = taken
        except CannotRun as e:
            print(f"sanlock io_timeout {io}: cannot run here: {e}", flush=True)
    return results


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().split("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def io_timeout_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="sbd messages")
    ap.add_argument("--sanlock-reps", type=int, default=3, help="sanlock takeovers per io timeout (~76 s each at 2)")
    ap.add_argument("--sanlock-io-timeouts", type=io_timeout_list, default=[2],
                    help="comma list, e.g. 2,10 (10 = sanlock's default, ~140 s per takeover)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, {os.uname().release}", flush=True)
    run(args.reps, args.sanlock_reps, args.sanlock_io_timeouts)


if __name__ == "__main__":
    sys.exit(main())
