"""Failover benchmarks with quorum, the disk pill and self-fencing (issue 10's targets).

    python -m tools.bench.failover [--reps 5] [--io-timeout-ms 500]
    python -m tools.bench.failover --reps 3 --with-anchors [--sanlock-reps 3] [--sanlock-io-timeouts 2,10]
    python -m tools.bench.failover --reps 5 --scsi-pr [--fast]

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
--scsi-pr runs the same sigkill and freeze cases with SCSI-3 PR fencing (issue 11): a private tgtd
(tools.tgt) on 127.0.0.1 exports one LUN, every node has [scsi-pr] on it and `fence = ["scsi-pr",
"pill"]`, and "db" is marked on_pr_luns (fencing FD13: taken over at the verified preempt, no
wait for the victim's watchdog); besides stop -> survivor holds it measures the fence latency
from the fencer's decision ("must be fenced") to the verified preempt and to the receipt (FD12:
one watchdog window later), from the fencer's log. The pill cases run first in the same run.
--fast uses the fast profile (interval 50 / dead 400 ms) for every case.
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
FAST_INTERVAL_MS, FAST_DEAD_MS = 50, 400
RESOURCE = '[[resource]]\nname = "db"\ninterval_ms = 1000\non_loss = ["none"]\n'
PROFILE = {"interval_ms": INTERVAL_MS, "dead_ms": DEAD_MS}  # --fast changes it


class Trio:
    def __init__(self, io_timeout_ms: int, pr_url: str | None = None):
        self.pr_url = pr_url
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
                                 str(PROFILE["interval_ms"]), "--dead-ms", str(PROFILE["dead_ms"]), "--io-timeout-ms",
                                 str(io_timeout_ms),
                                 "--watchdog-timeout-s", str(WATCHDOG_S)],
                       check=True, cwd=ROOT, capture_output=True, timeout=60)
        for i in (1, 2, 3):
            self.dogs[i] = FuseWatchdog(os.path.join(self.work, f"wd{i}")).start()
            cfg = self.cfgs[i] = os.path.join(self.work, f"n{i}.toml")
            fence, pr, res = "", "", RESOURCE
            if self.pr_url:
                fence = 'fence = ["scsi-pr", "pill"]\n'
                pr = (f'[scsi-pr]\nluns = ["{self.pr_url}"]\ninitiator = "iqn.2024-01.org.diskhb.bench:n{i}"\n'
                      "command_timeout_ms = 1000\ntimeout_ms = 3000\n")
                res = RESOURCE + "on_pr_luns = true\n"
            with open(cfg, "w") as f:
                f.write(f'[node]\nname = "n{i}"\nid = {i}\nrun_dir = "{self.run_dir}"\n{fence}'
                        f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n[quorum]\nnodes = [1, 2, 3]\n'
                        f'[watchdog]\ndevice = "{self.dogs[i].path}"\ntimeout_s = {WATCHDOG_S}\n{res}{pr}'
                        f'[[region]]\ntype = "disk"\npath = "{self.region}"\n')
            with open(os.path.join(self.work, f"n{i}.log"), "w") as out:
                self.procs[i] = subprocess.Popen(DISKHB + ["run", "--config", cfg], stdout=out,
                                                 stderr=subprocess.STDOUT, cwd=ROOT)
            self.dogs[i].set_reset_pid(self.procs[i].pid)
        for i in (1, 2, 3):
            _wait(lambda i=i: ((self.view(i) or {}).get("quorum") or {}).get("votes") == 3, 20, f"node {i} quorate")
            if self.pr_url:
                _wait(lambda i=i: ((self.view(i) or {}).get("scsi_pr") or {}).get("registered"), 20,
                      f"node {i} registered")

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


def _takeover(io_timeout_ms: int, sig: int, pr_url: str | None = None) -> tuple[float, float]:
    """(stop -> node 3 holds "db", stop -> node 3 counts node 2 fenced), seconds."""
    t = Trio(io_timeout_ms, pr_url)
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
        written = _log_time(next(line for line in open(os.path.join(t.work, "n1.log"))
                                 if "fencing node 2" in line and "attempt 1: pill" in line))
        fenced = _log_time(next(line for line in open(os.path.join(t.work, "n2.log")) if "SELF-FENCED (pill)" in line))
        return seen, verified, fenced - written
    finally:
        t.close()


def _pr_latency(io_timeout_ms: int, pr_url: str) -> tuple[float, float, float]:
    """SIGKILL of node 2 with scsi-pr: (stop -> node 3 holds "db", decision -> preempt verified,
    decision -> receipt), seconds; the two latencies from node 3's log lines."""
    t = Trio(io_timeout_ms, pr_url)
    try:
        assert t.ask(2, "mmp-acquire db 0 1")["ok"]
        t0 = time.monotonic()
        t.procs[2].send_signal(signal.SIGKILL)
        out = t.ask(3, "mmp-acquire db 30000 0", 90)
        held = time.monotonic() - t0
        assert out.get("ok"), out
        _wait(lambda: (t.view(3) or {}).get("fence_receipts"), 30, "node 3 issues the receipt")
        lines = open(os.path.join(t.work, "n3.log")).read().splitlines()
        decided = _log_time(next(x for x in lines if "node 2 (generation" in x and "must be fenced" in x))
        verified = _log_time(next(x for x in lines if "fencing node 2" in x and "by scsi-pr: fenced" in x))
        receipt = _log_time(next(x for x in lines if "fencing receipt for node 2" in x))
        return held, verified - decided, receipt - decided
    finally:
        t.close()


def _scsi_pr(args) -> None:
    from tools.tgt import Tgt, missing

    why = missing()
    if why:
        print(f"scsi-pr: cannot run here: {why}", flush=True)
        return
    with Tgt() as tgt:
        for n, (name, sig) in enumerate((("sigkill", signal.SIGKILL), ("freeze", signal.SIGSTOP))):
            held = []
            for k in range(args.reps):
                iqn = f"iqn.2024-01.org.diskhb.bench:{name}{k}"
                url = tgt.add_target(iqn, size_bytes=4 << 20)
                try:
                    held.append(_takeover(args.io_timeout_ms, sig, url)[0])
                finally:
                    tgt.remove_target(iqn)
            print(_line(f"scsi-pr {name}: stop -> survivor holds", held), flush=True)
        held, verified, receipts = [], [], []
        for k in range(args.reps):
            iqn = f"iqn.2024-01.org.diskhb.bench:latency{k}"
            url = tgt.add_target(iqn, size_bytes=4 << 20)
            try:
                h, v, r = _pr_latency(args.io_timeout_ms, url)
            finally:
                tgt.remove_target(iqn)
            held.append(h)
            verified.append(v)
            receipts.append(r)
        print(_line("scsi-pr: decision -> preempt verified (keys read back)", verified), flush=True)
        print(_line("scsi-pr: decision -> receipt (one watchdog window frozen)", receipts), flush=True)


def _line(name: str, xs: list[float]) -> str:
    return (f"{name}: min {min(xs):.3f} s, median {statistics.median(xs):.3f} s, max {max(xs):.3f} s"
            f" (n={len(xs)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--io-timeout-ms", type=int, default=None, help="[default 500; 100 with --fast]")
    ap.add_argument("--with-anchors", action="store_true", help="also run sbd and sanlock (tools.bench.anchors)")
    ap.add_argument("--sanlock-reps", type=int, default=3, help="with --with-anchors: takeovers per io timeout")
    ap.add_argument("--sanlock-io-timeouts", type=anchors.io_timeout_list, default=[2],
                    help="with --with-anchors: comma list of sanlock io timeouts (s), e.g. 2,10")
    ap.add_argument("--scsi-pr", action="store_true", help="also the sigkill and freeze cases with scsi-pr fencing"
                    " (a private tgtd on 127.0.0.1), and its fence latency")
    ap.add_argument("--fast", action="store_true", help="the fast profile: interval 50 / dead 400 ms")
    ap.add_argument("--no-pill", action="store_true", help="skip the pill cases (with --scsi-pr)")
    args = ap.parse_args()
    if args.fast:
        PROFILE.update(interval_ms=FAST_INTERVAL_MS, dead_ms=FAST_DEAD_MS)
    if args.io_timeout_ms is None:
        args.io_timeout_ms = 100 if args.fast else 500  # below the dead time (the region's format rule)
    print(f"{os.cpu_count()} cores, {os.uname().release}; interval {PROFILE['interval_ms']} / dead"
          f" {PROFILE['dead_ms']} ms, io timeout {args.io_timeout_ms} ms, cluster watchdog {WATCHDOG_S} s", flush=True)
    if not args.no_pill:
        _pill_cases(args)
    if args.scsi_pr:
        _scsi_pr(args)
    if args.with_anchors:
        anchors.run(args.reps, args.sanlock_reps, args.sanlock_io_timeouts)


def _pill_cases(args) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
