"""Detection latency after SIGKILL per region mix (issues 2, 3), and disk daemon cost per tick.

    python -m tools.bench.detection [--kills 20] [--cost-seconds 30] [--only detection|cost]
    python -m tools.bench.detection --only detection --mix net --interval-ms 100 --dead-ms 1000

Detection: three daemons (interval 200 ms, dead 2000 ms unless told) on one region file
(--mix disk), on authenticated UDP over loopback (--mix net), or both. Each round kills
node3 at a random phase, and reads from node1's and node2's logs the wall time of the tick that
declared it dead (the log record is stamped in the deciding tick); latency = the later of the
two minus the kill time (same host, same clock). node3 is restarted between rounds.
Cost: one daemon over a region where a slot writer keeps N-1 simulated peers beating; CPU
from /proc/PID/stat over a steady window, I/O from the daemon's own counters.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISKHB = [sys.executable, "-m", "diskhb.cli"]
INTERVAL_MS, DEAD_MS = 200, 2000
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _format(region: str, slots: int, interval_ms: int = INTERVAL_MS, dead_ms: int = DEAD_MS) -> None:
    subprocess.run(DISKHB + ["format", region, "--cluster", "bench", "--slots", str(slots), "--interval-ms",
                             str(interval_ms), "--dead-ms", str(dead_ms)], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)


class Layout:
    """Where the nodes of a bench cluster beat: a disk region file, a UDP link over loopback
    (one port per node, every other node a unicast peer), or both."""

    def __init__(self, work: str, mix: str = "disk", nodes: int = 3, interval_ms: int = INTERVAL_MS,
                 dead_ms: int = DEAD_MS, disk_paths: dict[int, str] | None = None):
        self.work, self.mix, self.interval_ms, self.dead_ms = work, mix, interval_ms, dead_ms
        self.region = os.path.join(work, "r.img")
        self.disk_paths = disk_paths or {}  # per node: its own path to the region (a FaultDisk mount)
        self.udp_ports = {i: _free_port() for i in range(1, nodes + 1)}
        self.key = os.path.join(work, "authkey")
        if mix in ("disk", "both"):
            _format(self.region, 8, interval_ms, dead_ms)
        if mix in ("net", "both"):
            subprocess.run(DISKHB + ["keygen", self.key], check=True, cwd=ROOT, capture_output=True, timeout=60)

    def regions(self, node_id: int) -> str:
        out = ""
        if self.mix in ("disk", "both"):
            out += f'[[region]]\ntype = "disk"\nname = "disk"\npath = "{self.disk_paths.get(node_id, self.region)}"\n'
        if self.mix in ("net", "both"):
            peers = ", ".join(f'"127.0.0.1:{p}"' for i, p in self.udp_ports.items() if i != node_id)
            out += (f'[[region]]\ntype = "net"\nname = "lan"\nbind = "127.0.0.1"\nport = {self.udp_ports[node_id]}\n'
                    f'peers = [{peers}]\nkey = "{self.key}"\n')
        return out

    def cluster(self) -> str:
        return f'[cluster]\nname = "bench"\ninterval_ms = {self.interval_ms}\ndead_ms = {self.dead_ms}\n'


def _start(work: str, layout: "Layout | str", node_id: int, port: int, extra: str = "") -> tuple[subprocess.Popen, str]:
    if isinstance(layout, str):  # a disk region path: the disk-only layout of the cost bench
        regions, cluster = f'[[region]]\ntype = "disk"\npath = "{layout}"\n', ""
    else:
        regions, cluster = layout.regions(node_id), layout.cluster()
    cfg = os.path.join(work, f"n{node_id}.toml")
    with open(cfg, "w") as f:
        f.write(f'[node]\nname = "node{node_id}"\nid = {node_id}\nrun_dir = "{work}/run"\n{cluster}'
                f'[metrics]\nlisten = "127.0.0.1:{port}"\n{extra}{regions}')
    log = os.path.join(work, f"n{node_id}.{time.monotonic_ns()}.log")
    with open(log, "w") as out:
        p = subprocess.Popen(DISKHB + ["run", "--config", cfg], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return p, log


LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*node node3 \(id 3\): \w+ -> dead", re.M)


def _dead_time(log: str, after: float) -> float | None:
    with open(log) as f:
        for m in LOG_TS.finditer(f.read()):
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if t >= after - 0.01:
                return t
    return None


def _wait(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timed out: {what}")


def bench_detection(kills: int, mix: str = "disk", interval_ms: int = INTERVAL_MS,
                    dead_ms: int = DEAD_MS) -> list[float]:
    work = tempfile.mkdtemp(prefix="diskhb-bench-", dir="/var/tmp")
    procs: list[subprocess.Popen] = []
    try:
        layout = Layout(work, mix, 3, interval_ms, dead_ms)
        p1, log1 = _start(work, layout, 1, _free_port())
        p2, log2 = _start(work, layout, 2, _free_port())
        procs += [p1, p2]
        out = []
        rng = random.Random(1)
        for i in range(kills):
            p3, _ = _start(work, layout, 3, _free_port())
            procs.append(p3)
            # node3 must be seen alive (after its slot claim) by both observers first
            mark = os.path.getsize(log1), os.path.getsize(log2)
            _wait(lambda: _seen_alive(log1, mark[0]) and _seen_alive(log2, mark[1]), 20, "node3 alive")
            time.sleep(1 + rng.random() * interval_ms / 1000)  # random phase against the ticks
            t_kill = time.time()
            p3.send_signal(signal.SIGKILL)
            p3.wait(10)
            t1 = _wait(lambda: _dead_time(log1, t_kill), 10, "node1 sees node3 dead")
            t2 = _wait(lambda: _dead_time(log2, t_kill), 10, "node2 sees node3 dead")
            out.append(max(t1, t2) - t_kill)
            print(f"kill {i + 1:2d}: every peer declared node3 dead after {out[-1]:.3f} s", flush=True)
        return out
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def _seen_alive(log: str, offset: int) -> bool:
    with open(log) as f:
        f.seek(offset)
        return "node node3 (id 3): " in f.read()


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def _metrics(port: int, names: list[str]) -> list[float]:
    """One scrape: for each name (a prefix, labels included), the sum of the matching samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    return [sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name)) for name in names]


def _metric(port: int, name: str) -> float:
    return _metrics(port, [name])[0]


def bench_cost(used: int, seconds: float) -> dict:
    work = tempfile.mkdtemp(prefix="diskhb-bench-", dir="/var/tmp")
    procs: list[subprocess.Popen] = []
    try:
        region = os.path.join(work, "r.img")
        _format(region, max(used, 8))
        if used > 1:
            procs.append(subprocess.Popen([sys.executable, "-m", "tools.bench.slotwriter", region, "2", str(used),
                                           "--seconds", str(seconds + 30)], cwd=ROOT))
        port = _free_port()
        p, log = _start(work, region, 1, port)
        procs.append(p)
        _wait(lambda: _metric_ok(port), 20, "metrics up")
        time.sleep(2 * DEAD_MS / 1000)  # warm up: every peer seen alive
        rd = f'diskhb_region_io_bytes_total{{direction="read",region="disk:{region}"}}'
        wr = f'diskhb_region_io_bytes_total{{direction="write",region="disk:{region}"}}'
        nreads = f'diskhb_region_ios_total{{direction="read",region="disk:{region}"}}'
        # Scrapes cost the daemon CPU too (2000 nodes = 22,000 series): keep them out of the window.
        s0 = _cpu_s(p.pid)
        r0, w0, k0, n0 = (_metric(port, m) for m in (rd, wr, "diskhb_ticks_total", nreads))
        scrape_cpu_s = (_cpu_s(p.pid) - s0) / 4
        alive = _metric(port, "diskhb_node_alive")
        c0, t0 = _cpu_s(p.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = _cpu_s(p.pid), time.monotonic()
        r1, w1, k1, n1 = (_metric(port, m) for m in (rd, wr, "diskhb_ticks_total", nreads))
        el = t1 - t0
        ticks = max(1, k1 - k0 - 4)  # the scrapes at the end ran during a few more ticks
        return {"used": used, "alive_peers_seen": alive, "cpu_pct": 100 * (c1 - c0) / el,
                "cpu_ms_per_tick": 1000 * (c1 - c0) / ticks, "scrape_cpu_ms": 1000 * scrape_cpu_s,
                "read_Bps": (r1 - r0) / el, "write_Bps": (w1 - w0) / el,
                "reads_per_tick": (n1 - n0) / max(1, k1 - k0)}
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def _metric_ok(port: int) -> bool:
    try:
        _metric(port, "diskhb_ticks_total")
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--cost-seconds", type=float, default=30)
    ap.add_argument("--only", choices=["detection", "cost"])
    ap.add_argument("--mix", choices=["disk", "net", "both"], default="disk", help="Detection: regions to beat on.")
    ap.add_argument("--interval-ms", type=int, default=INTERVAL_MS)
    ap.add_argument("--dead-ms", type=int, default=DEAD_MS)
    a = ap.parse_args()
    if a.only in (None, "detection"):
        lat = bench_detection(a.kills, a.mix, a.interval_ms, a.dead_ms)
        print(f"detection ({a.mix}, interval {a.interval_ms} ms, dead {a.dead_ms} ms, {len(lat)} kills): "
              f"min {min(lat):.3f} s, median {statistics.median(lat):.3f} s, max {max(lat):.3f} s")
    if a.only in (None, "cost"):
        for used in (3, 16, 64, 2000):
            r = bench_cost(used, a.cost_seconds)
            print(f"used slots {used:4d}: peers alive {r['alive_peers_seen']:.0f}, CPU {r['cpu_pct']:.2f} % of a core"
                  f" ({r['cpu_ms_per_tick']:.2f} ms/tick), one scrape {r['scrape_cpu_ms']:.0f} ms CPU,"
                  f" reads/tick {r['reads_per_tick']:.2f},"
                  f" read {r['read_Bps'] / 1024:.1f} KiB/s, write {r['write_Bps'] / 1024:.2f} KiB/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
