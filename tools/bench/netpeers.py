"""Net region cost (issue 3): one real daemon among N-1 simulated peers on loopback UDP.

    python -m tools.bench.netpeers [--nodes 16 64] [--seconds 30]

Each simulated peer has its own UDP socket on 127.0.0.1 (so the daemon's unicast peer list
holds N-1 real destinations) and sends a real signed heartbeat (netpath.wire.encode with the
daemon's key file, the same code the daemon sends with) every interval, carrying a view in
which it sees every node alive. Interval 100 ms, dead 1000 ms (the net region's target
timing). The daemon's CPU comes from /proc/PID/stat over a window without metrics scrapes;
packets and bytes from its own counters. Everything started is ended in `finally`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from diskhb.core.types import SlotFlag
from diskhb.runtime import monotonic_ms, new_generation
from netpath import wire
from netpath.keys import load_key_file
from tools.bench.detection import DISKHB, ROOT, _cpu_s, _free_port, _metric_ok, _metrics, _start, _stop, _wait

INTERVAL_MS, DEAD_MS = 100, 1000
CLUSTER = "bench"


class Peers:
    """N-1 simulated nodes, ids 2..N, each beating from its own socket."""

    def __init__(self, nodes: int, key_file: str, daemon_port: int):
        self.keys = load_key_file(key_file)
        self.dest = ("127.0.0.1", daemon_port)
        self.ids = list(range(2, nodes + 1))
        self.socks = {}
        for i in self.ids:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks[i] = s
        self.gens = {i: new_generation() for i in self.ids}
        self.seq = 0
        self.view = {"lan": tuple(range(1, nodes + 1))}
        self.cid = wire.cluster_id(CLUSTER)

    def ports(self) -> dict[int, int]:
        return {i: s.getsockname()[1] for i, s in self.socks.items()}

    def beat(self) -> None:
        self.seq += 1
        now = monotonic_ms()
        for i, s in self.socks.items():
            p = wire.Packet(cluster_id=self.cid, node_id=i, generation=self.gens[i], seq=self.seq, mono_ms=now,
                            flags=int(SlotFlag.ACTIVE), name=f"peer{i}", view=self.view)
            s.sendto(wire.encode(p, self.keys), self.dest)
            while True:  # drain what the daemon sent us (bounded by the socket buffer)
                try:
                    s.recv(2048)
                except BlockingIOError:
                    break

    def run_until(self, stop: threading.Event, limit_s: float) -> None:
        """Beat every interval until `stop` is set (bounded by limit_s)."""
        end = time.monotonic() + limit_s
        nxt = time.monotonic()
        while not stop.is_set() and time.monotonic() < end:
            self.beat()
            nxt += INTERVAL_MS / 1000
            stop.wait(max(0.0, nxt - time.monotonic()))

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


def bench(nodes: int, seconds: float) -> dict:
    work = tempfile.mkdtemp(prefix="diskhb-bench-net-", dir="/var/tmp")
    procs: list[subprocess.Popen] = []
    peers = None
    try:
        key = os.path.join(work, "authkey")
        subprocess.run(DISKHB + ["keygen", key], check=True, cwd=ROOT, capture_output=True, timeout=60)
        udp_port = _free_port()
        peers = Peers(nodes, key, udp_port)
        dests = ", ".join(f'"127.0.0.1:{p}"' for p in peers.ports().values())
        cfg = (f'[cluster]\nname = "{CLUSTER}"\ninterval_ms = {INTERVAL_MS}\ndead_ms = {DEAD_MS}\n')
        region = (f'[[region]]\ntype = "net"\nname = "lan"\nbind = "127.0.0.1"\nport = {udp_port}\n'
                  f'peers = [{dests}]\nkey = "{key}"\n')

        class _Layout:  # detection._start's layout protocol: our own regions and timing
            def regions(self, node_id):
                return region

            def cluster(self):
                return cfg

        port = _free_port()
        p, _ = _start(work, _Layout(), 1, port)
        procs.append(p)
        _wait(lambda: _metric_ok(port), 20, "daemon metrics")
        # The peers beat on their own thread for the whole measurement, scrapes included: every
        # counter then grows at its steady rate over the window between the two scrapes.
        stop = threading.Event()
        beater = threading.Thread(target=peers.run_until, args=(stop, seconds + 60), daemon=True)
        beater.start()
        time.sleep(3 * DEAD_MS / 1000)  # warm up: every peer seen alive
        names = ['diskhb_net_packets_accepted_total{region="lan"}', 'diskhb_net_packets_sent_total{region="lan"}',
                 'diskhb_region_io_bytes_total{direction="read",region="lan"}',
                 'diskhb_region_io_bytes_total{direction="write",region="lan"}',
                 'diskhb_net_packets_rejected_total{region="lan"',  # every reason: must stay 0
                 "diskhb_node_alive"]
        ts0 = time.monotonic()
        m0 = _metrics(port, names)
        c0, t0 = _cpu_s(p.pid), time.monotonic()  # CPU window: no scrape inside it
        time.sleep(seconds)
        c1, t1 = _cpu_s(p.pid), time.monotonic()
        m1 = _metrics(port, names)
        ts1 = time.monotonic()
        stop.set()
        beater.join(5)
        el, win = t1 - t0, ts1 - ts0  # the counter window holds both scrapes: a few ms longer
        d = [b - a for a, b in zip(m0, m1)]
        return {"nodes": nodes, "alive_seen": m1[5], "cpu_pct": 100 * (c1 - c0) / el,
                "rx_pps": d[0] / win, "tx_pps": d[1] / win, "rx_Bps": d[2] / win, "tx_Bps": d[3] / win,
                "rejected": m1[4]}
    finally:
        if peers is not None:
            peers.close()
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    for n in a.nodes:
        r = bench(n, a.seconds)
        print(f"{n:3d} nodes (net only, {INTERVAL_MS}/{DEAD_MS} ms): peers alive {r['alive_seen']:.0f},"
              f" CPU {r['cpu_pct']:.2f} % of a core, received {r['rx_pps']:.0f} pkt/s"
              f" ({r['rx_Bps'] / 1024:.1f} KiB/s), sent {r['tx_pps']:.0f} pkt/s ({r['tx_Bps'] / 1024:.1f} KiB/s),"
              f" rejected packets {r['rejected']:.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
