"""No false deaths under load (issue 3 target): both cores saturated, the disk stalling, the net healthy.

    python -m tools.bench.stress [--duration-s 600] [--stall-every-s 25] [--stall-s 5]

Three daemons (interval 100 ms, dead 1000 ms: the net region's benchmark timing) beat on one
disk region, reached through a FaultDisk (FUSE) mount so the disk can be stalled, and on an
authenticated UDP link over loopback. stress-ng keeps every core busy for the whole run; every
--stall-every-s seconds the disk hangs for --stall-s seconds (longer than dead_ms), alternately
all I/O (our reads see nothing) and writes only (reads see every seq stand still, so the disk
region loses every node). The network region stays healthy, so no node may ever be
declared dead overall. Reported: overall deaths (must be 0), per-region losses, the worst tick
lateness (histogram bucket), and that every daemon is still running.

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
REGION_LOSS = re.compile(r"on region (\w+): \w+ -> dead")


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
    fd = None
    try:
        layout = Layout(work, "both", 3, INTERVAL_MS, DEAD_MS)
        fd = FaultDisk(layout.region, os.path.join(work, "mnt")).start()
        layout.disk_paths = {i: fd.path for i in (1, 2, 3)}
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
        stalls = 0
        next_stall = t0 + stall_every_s / 2
        while time.monotonic() - t0 < duration_s:
            if time.monotonic() >= next_stall and time.monotonic() + stall_s < t0 + duration_s:
                # Alternate: everything hangs (our reads see nothing, so the disk judges no one),
                # or only writes hang (reads see every seq stand still: the disk region loses
                # every node, and only the network keeps them alive).
                kind = "all" if stalls % 2 == 0 else "write"
                fd.set(**{kind: "hang"})
                time.sleep(stall_s)
                fd.set(all="ok")
                stalls += 1
                print(f"{time.monotonic() - t0:6.1f} s: disk stall {stalls} ({kind} hung {stall_s:g} s) done",
                      flush=True)
                next_stall += stall_every_s
            time.sleep(0.2)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"daemon {p.pid} exited with {p.returncode} during the run")
        elapsed = time.monotonic() - t0
        texts = {i: open(logs[i]).read() for i in (1, 2, 3)}
        lateness = {i: _lateness_worst_s(ports[i]) for i in (1, 2, 3)}
        return {
            "duration_s": elapsed, "stalls": stalls,
            "overall_deaths": sum(len(OVERALL_DEATH.findall(t)) for t in texts.values()),
            "region_losses": {r: sum(1 for t in texts.values() for x in REGION_LOSS.findall(t) if x == r)
                              for r in ("disk", "lan")},
            "lateness_worst_s": max(w for w, _ in lateness.values()),
            "ticks": sum(n for _, n in lateness.values()),
            "running": all(p.poll() is None for p in procs),
            "death_lines": [ln for t in texts.values() for ln in t.splitlines() if OVERALL_DEATH.search(ln)][:10],
        }
    finally:
        if stress is not None and stress.poll() is None:
            stress.terminate()
            try:
                stress.wait(10)
            except subprocess.TimeoutExpired:
                stress.kill()
                stress.wait(10)
        if fd is not None:
            fd.release()  # nothing may stay hung while the daemons stop
        _stop(procs)
        if fd is not None:
            fd.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration-s", type=float, default=600)
    ap.add_argument("--stall-every-s", type=float, default=25)
    ap.add_argument("--stall-s", type=float, default=5)
    a = ap.parse_args()
    r = run(a.duration_s, a.stall_every_s, a.stall_s)
    print(f"{r['duration_s']:.0f} s with every core busy (stress-ng), {r['stalls']} disk stalls of {a.stall_s:g} s,"
          f" net healthy, 3 nodes at {INTERVAL_MS}/{DEAD_MS} ms: overall deaths {r['overall_deaths']},"
          f" per-region losses {r['region_losses']}, worst tick lateness <= {r['lateness_worst_s']:g} s over"
          f" {r['ticks']:.0f} ticks, daemons running: {r['running']}")
    for line in r["death_lines"]:
        print("  ", line)
    return 0 if r["overall_deaths"] == 0 and r["running"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
