"""No false deaths under load (issue 3 target): both cores saturated, the disk stalling, the net healthy.

    python -m tools.bench.stress [--duration-s 600] [--stall-every-s 25] [--stall-s 5]

Three daemons (interval 100 ms, dead 1000 ms: the net region's benchmark timing) beat on one
disk region, each through its own FaultDisk (FUSE) mount of the same backing file so one node's
disk or every node's disk can be stalled, and on an authenticated UDP link over loopback.
stress-ng keeps every core busy for the whole run; every --stall-every-s seconds the disk hangs
for --stall-s seconds (longer than dead_ms), in turn:
  all   every node's reads and writes hang (nobody can read, so the disk judges nobody);
  one   one node's reads and writes hang (node 1, 2, 3 in turn): its peers see its seq stand
        still and lose it on the disk region, and it judges nobody meanwhile;
  write every node's writes hang, reads go on: every node loses both peers on the disk region.
The network region stays healthy, so no node may ever be declared dead overall (or restart).
Reported: overall deaths and restarts (must be 0), per-region losses and their log lines, own
region unhealthy records, the worst tick lateness (histogram bucket), every daemon still running.

Needs root (FUSE allow_other), fusermount3, mfusepy and stress-ng. Everything it starts (the
daemons, stress-ng, the FUSE server) is ended by PID in `finally`, and the work dir removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

from tools.bench.detection import Layout, _free_port, _start, _stop, _wait
from tools.faultdisk import FaultDisk

INTERVAL_MS, DEAD_MS = 100, 1000
OVERALL_DEATH = re.compile(r"\(id \d+\): \w+ -> dead")
RESTART = re.compile(r"\(id \d+\) restarted on")
REGION_LOSS = re.compile(r"on region (\w+): \w+ -> dead")
UNHEALTHY = re.compile(r"region (\w+) unhealthy: ")
STALL_KINDS = ("all", "one", "write")


def _lateness_worst_s(port: int) -> tuple[float, float]:
    """(upper bound of the highest non-empty lateness bucket, tick count) from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    buckets, total = [], 0.0
    for line in text.splitlines():
        m = re.match(r'diskhb_tick_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
        elif line.startswith("diskhb_tick_lateness_seconds_count"):
            total = float(line.split()[-1])
    worst = next((le for le, n in sorted(buckets) if n >= total), float("inf"))
    return worst, total


def run(duration_s: float, stall_every_s: float, stall_s: float) -> dict:
    if not shutil.which("stress-ng"):
        raise SystemExit("stress-ng not installed (apt-get install stress-ng)")
    work = tempfile.mkdtemp(prefix="diskhb-stress-", dir="/var/tmp")
    procs: list[subprocess.Popen] = []
    stress = None
    fds: dict[int, FaultDisk] = {}
    try:
        layout = Layout(work, "both", 3, INTERVAL_MS, DEAD_MS)
        for i in (1, 2, 3):  # one mount per node: a stall can hit one node's disk path or all
            fds[i] = FaultDisk(layout.region, os.path.join(work, f"mnt{i}")).start()
        layout.disk_paths = {i: fds[i].path for i in (1, 2, 3)}
        ports = {i: _free_port() for i in (1, 2, 3)}
        logs = {}
        for i in (1, 2, 3):
            p, logs[i] = _start(work, layout, i, ports[i])
            procs.append(p)
        _wait(lambda: all(open(logs[i]).read().count(" -> alive") >= 2 for i in (1, 2, 3)), 20, "all alive")
        stress = subprocess.Popen(["stress-ng", "--cpu", str(os.cpu_count() or 2), "--timeout",
                                   f"{int(duration_s) + 30}s", "--quiet"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        stalls, stall_log = 0, []
        next_stall = t0 + stall_every_s / 2
        while time.monotonic() - t0 < duration_s:
            if time.monotonic() >= next_stall and time.monotonic() + stall_s < t0 + duration_s:
                kind = STALL_KINDS[stalls % len(STALL_KINDS)]
                if kind == "one":
                    targets = [1 + (stalls // len(STALL_KINDS)) % 3]
                else:
                    targets = [1, 2, 3]
                mode = {"write": "hang"} if kind == "write" else {"all": "hang"}
                t_stall = time.monotonic() - t0
                for i in targets:
                    fds[i].set(**mode)
                time.sleep(stall_s)
                for i in targets:
                    fds[i].set(all="ok")
                stalls += 1
                what = f"{'writes' if kind == 'write' else 'reads+writes'} of node(s) {','.join(map(str, targets))}"
                stall_log.append((t_stall, kind, targets))
                print(f"{t_stall:6.1f} s: disk stall {stalls}: {what} hung {stall_s:g} s, released", flush=True)
                next_stall += stall_every_s
            time.sleep(0.2)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"daemon {p.pid} exited with {p.returncode} during the run")
        elapsed = time.monotonic() - t0
        texts = {i: open(logs[i]).read() for i in (1, 2, 3)}
        lateness = {i: _lateness_worst_s(ports[i]) for i in (1, 2, 3)}
        loss_lines = [f"n{i}: {ln}" for i, t in texts.items() for ln in t.splitlines() if REGION_LOSS.search(ln)]
        return {
            "duration_s": elapsed, "stalls": stalls,
            "stall_kinds": {k: sum(1 for _, kk, _ in stall_log if kk == k) for k in STALL_KINDS},
            "overall_deaths": sum(len(OVERALL_DEATH.findall(t)) for t in texts.values()),
            "restarts": sum(len(RESTART.findall(t)) for t in texts.values()),
            "region_losses": {r: sum(1 for t in texts.values() for x in REGION_LOSS.findall(t) if x == r)
                              for r in ("disk", "lan")},
            "unhealthy": sum(len(UNHEALTHY.findall(t)) for t in texts.values()),
            "loss_lines": loss_lines,
            "lateness_worst_s": max(w for w, _ in lateness.values()),
            "lateness_by_node_s": {i: w for i, (w, _) in lateness.items()},
            "ticks": sum(n for _, n in lateness.values()),
            "running": all(p.poll() is None for p in procs),
            "death_lines": [ln for t in texts.values() for ln in t.splitlines()
                            if OVERALL_DEATH.search(ln) or RESTART.search(ln)][:10],
        }
    finally:
        if stress is not None and stress.poll() is None:
            stress.terminate()
            try:
                stress.wait(10)
            except subprocess.TimeoutExpired:
                stress.kill()
                stress.wait(10)
        for fd in fds.values():
            fd.release()  # nothing may stay hung while the daemons stop
        _stop(procs)
        for fd in fds.values():
            fd.close()  # unmounts (fusermount3 -u if the server died)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration-s", type=float, default=600)
    ap.add_argument("--stall-every-s", type=float, default=25)
    ap.add_argument("--stall-s", type=float, default=5)
    a = ap.parse_args()
    r = run(a.duration_s, a.stall_every_s, a.stall_s)
    print(f"{r['duration_s']:.0f} s with every core busy (stress-ng), {r['stalls']} disk stalls of {a.stall_s:g} s"
          f" {r['stall_kinds']}, net healthy, 3 nodes at {INTERVAL_MS}/{DEAD_MS} ms: overall deaths"
          f" {r['overall_deaths']}, restarts {r['restarts']}, per-region losses {r['region_losses']},"
          f" own region unhealthy records {r['unhealthy']}, worst tick lateness <= {r['lateness_worst_s']:g} s"
          f" (per node {r['lateness_by_node_s']}) over {r['ticks']:.0f} ticks, daemons running: {r['running']}")
    print("region-loss log lines (first 12):")
    for line in r["loss_lines"][:12]:
        print("  ", line)
    for line in r["death_lines"]:
        print("  DEATH/RESTART:", line)
    return 0 if r["overall_deaths"] == 0 and r["restarts"] == 0 and r["running"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
