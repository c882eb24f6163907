"""Failover benchmarks with quorum, the disk pill and self-fencing (issue 10's targets).

    python -m tools.bench.failover [--reps 5] [--io-timeout-ms 500]
    python -m tools.bench.failover --reps 3 --with-anchors [--sanlock-reps 3] [--sanlock-io-timeouts 2,10]

Three daemons on one region file (interval 200 ms, dead 2000 ms, the cluster's watchdog 1 s in
the superblock), each with [quorum] nodes = [1, 2, 3] and its own FUSE watchdog (tools.fusewatchdog,
timeout 1 s, resetting = killing that daemon). Node 2 holds resource "db" (MMP interval 1000 ms,
on_loss none); node 3 is its fencer (the member after it). Cases, each repeated --reps times on a
fresh cluster, min / median / max:
  sigkill   node 2's daemon SIGKILLed; node 3 is asked at once to acquire "db" (waiting up to
            30 s): seconds from the kill until node 3 holds it. Node 3 names node 2 dead, writes
            the pill, counts it fenced at its self-fence deadline and takes the block over
            (FP0, CL3); also the kill -> fence verified time as node 3 reports it.
  freeze    the same with SIGSTOP: the frozen daemon's watchdog resets it after 1 s.
  pill      `diskhb fence 2` on node 1: seconds until node 2's own status says it fenced itself
            (pill seen: at its next slot read) and until node 1 counts it fenced (its READ_ONLY beat).
Every daemon and FUSE mount is ended in `finally`.
--with-anchors then runs the competitors in the same process, side by side (tools.bench.anchors):
sbd's poison pill (`message b test` -> the victim's watcher takes it; how long the sender blocks)
--reps times, and sanlock's dead host -> its resource lease taken by a peer, --sanlock-reps times
per io timeout (2 s by default, ~76 s each; sanlock's default 10 s with --sanlock-io-timeouts 2,10).
A competitor that cannot run here prints the failed command and its error on one line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from diskhb.control import ControlError, request
from tools.bench import anchors
from tools.bench.detection import DISKHB, ROOT, _free_port, _wait

INTERVAL_MS, DEAD_MS, WATCHDOG_S = 200, 2000, 1
RESOURCE = '[[resource]]\nname = "db"\ninterval_ms = 1000\non_loss = ["none"]\n'


class Trio:
    def __init__(self, io_timeout_ms: int):
        from tools.fusewatchdog import FuseWatchdog

        self.work = tempfile.mkdtemp(prefix="diskhb-failover-", dir="/var/tmp")
        self.region = os.path.join(self.work, "region.img")
        self.run_dir = os.path.join(self.work, "run")
        self.procs: dict[int, subprocess.Popen] = {}
        self.dogs = {}
        self.cfgs: dict[int, str] = {}
        try:
            self._start(io_timeout_ms, FuseWatchdog)
        except BaseException:
            self.close()  # a cluster that never came up leaves no daemon or FUSE mount behind
            raise

    def _start(self, io_timeout_ms: int, FuseWatchdog) -> None:
        subprocess.run(DISKHB + ["format", self.region, "--cluster", "bench", "--slots", "4", "--interval-ms",
                                 str(INTERVAL_MS), "--dead-ms", str(DEAD_MS), "--io-timeout-ms", str(io_timeout_ms),
                                 "--watchdog-timeout-s", str(WATCHDOG_S)],
                       check=True, cwd=ROOT, capture_output=True, timeout=60)
        for i in (1, 2, 3):
            self.dogs[i] = FuseWatchdog(os.path.join(self.work, f"wd{i}")).start()
            cfg = self.cfgs[i] = os.path.join(self.work, f"n{i}.toml")
            with open(cfg, "w") as f:
                f.write(f'[node]\nname = "n{i}"\nid = {i}\nrun_dir = "{self.run_dir}"\n'
                        f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n[quorum]\nnodes = [1, 2, 3]\n'
                        f'[watchdog]\ndevice = "{self.dogs[i].path}"\ntimeout_s = {WATCHDOG_S}\n{RESOURCE}'
                        f'[[region]]\ntype = "disk"\npath = "{self.region}"\n')
            with open(os.path.join(self.work, f"n{i}.log"), "w") as out:
                self.procs[i] = subprocess.Popen(DISKHB + ["run", "--config", cfg], stdout=out,
                                                 stderr=subprocess.STDOUT, cwd=ROOT)
            self.dogs[i].set_reset_pid(self.procs[i].pid)
        for i in (1, 2, 3):
            _wait(lambda i=i: ((self.view(i) or {}).get("quorum") or {}).get("votes") == 3, 20, f"node {i} quorate")

    def ask(self, node_id: int, line: str, timeout_s: float = 60) -> dict:
        return request(os.path.join(self.run_dir, f"diskhb-bench-{node_id}.sock"), line, timeout_s)

    def view(self, node_id: int) -> dict | None:
        try:
            return self.ask(node_id, "status", 5)
        except ControlError:
            return None

    def fenced(self, by: int, node_id: int) -> bool:
        return any(v["node"] == node_id and v["fenced"] for v in (self.view(by) or {}).get("fencing") or [])

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for wd in self.dogs.values():
            wd.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _takeover(io_timeout_ms: int, sig: int) -> tuple[float, float]:
    """(stop -> node 3 holds "db", stop -> node 3 counts node 2 fenced), seconds."""
    t = Trio(io_timeout_ms)
    try:
        assert t.ask(2, "mmp-acquire db 0 1")["ok"]
        t0 = time.monotonic()
        t.procs[2].send_signal(sig)
        out = t.ask(3, "mmp-acquire db 30000 0", 90)
        held = time.monotonic() - t0
        assert out.get("ok"), out
        _wait(lambda: t.fenced(3, 2), 30, "node 3 counts node 2 fenced")
        fenced_line = next(line for line in open(os.path.join(t.work, "n3.log"))
                           if "fencing node 2" in line and ": fenced:" in line)
        return held, _log_time(fenced_line) - (time.time() - (time.monotonic() - t0))
    finally:
        t.close()


def _log_time(line: str) -> float:
    import datetime

    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _pill(io_timeout_ms: int) -> tuple[float, float, float]:
    """(`diskhb fence 2` -> node 2 self-fenced, -> node 1 counts it fenced, pill written -> node 2
    fenced itself as their logs date it), seconds."""
    t = Trio(io_timeout_ms)
    try:
        t0 = time.monotonic()
        r = subprocess.run(DISKHB + ["fence", "2", "--config", t.cfgs[1]], cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        _wait(lambda: (t.view(2) or {}).get("phase") == "self_fenced" or t.procs[2].poll() is not None, 10,
              "node 2 fences itself")
        seen = time.monotonic() - t0
        _wait(lambda: t.fenced(1, 2), 10, "node 1 counts it fenced")
        verified = time.monotonic() - t0
        written = _log_time(next(line for line in open(os.path.join(t.work, "n1.log")) if "writing the disk pill" in line))
        fenced = _log_time(next(line for line in open(os.path.join(t.work, "n2.log")) if "SELF-FENCED (pill)" in line))
        return seen, verified, fenced - written
    finally:
        t.close()


def _line(name: str, xs: list[float]) -> str:
    return (f"{name}: min {min(xs):.3f} s, median {statistics.median(xs):.3f} s, max {max(xs):.3f} s"
            f" (n={len(xs)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--io-timeout-ms", type=int, default=500)
    ap.add_argument("--with-anchors", action="store_true", help="also run sbd and sanlock (tools.bench.anchors)")
    ap.add_argument("--sanlock-reps", type=int, default=3, help="with --with-anchors: takeovers per io timeout")
    ap.add_argument("--sanlock-io-timeouts", type=anchors.io_timeout_list, default=[2],
                    help="with --with-anchors: comma list of sanlock io timeouts (s), e.g. 2,10")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, {os.uname().release}; interval {INTERVAL_MS} / dead {DEAD_MS} ms, io timeout"
          f" {args.io_timeout_ms} ms, cluster watchdog {WATCHDOG_S} s", flush=True)
    for name, sig in (("sigkill", signal.SIGKILL), ("freeze", signal.SIGSTOP)):
        held, fenced = [], []
        for _ in range(args.reps):
            h, f = _takeover(args.io_timeout_ms, sig)
            held.append(h)
            fenced.append(f)
        print(_line(f"{name}: stop -> survivor holds", held), flush=True)
        print(_line(f"{name}: stop -> fence verified (deadline)", fenced), flush=True)
    seen, verified, logged = [], [], []
    for _ in range(args.reps):
        s, v, g = _pill(args.io_timeout_ms)
        seen.append(s)
        verified.append(v)
        logged.append(g)
    print(_line("pill: written -> victim self-fenced (their log lines; the write itself included)", logged),
          flush=True)
    print(_line("pill: diskhb fence -> victim self-fenced (CLI start included)", seen), flush=True)
    print(_line("pill: diskhb fence -> fencer counts it fenced (READ_ONLY beat)", verified), flush=True)
    if args.with_anchors:
        anchors.run(args.reps, args.sanlock_reps, args.sanlock_io_timeouts)


if __name__ == "__main__":
    sys.exit(main())
