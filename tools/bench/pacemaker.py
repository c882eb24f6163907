"""Failover on a real 2-node Pacemaker + corosync cluster with fence_diskhb (tools.pcmk).

    python -m tools.bench.pacemaker --reps 5 [--fencing sbd]   # root; about 30 s + 25 s per repetition

One cluster (each node in its own network, UTS, PID and mount namespace; corosync knet with
two_node at its default token timeouts, Pacemaker 2.1 at its defaults, fence_diskhb the stonith
device, group ocf:diskhb:guard -> ocf:heartbeat:Filesystem preferring n1). Each repetition:
the group on n1; SIGKILL of n1's PID 1 (its whole namespace); seconds until n2 has the ext4
mounted, with the steps from the survivor's logs (wall clock, ms): diskhb counts n1 fenced,
Pacemaker loses n1, the fence agent returns, guard started. With --fencing sbd the stonith
device is fence_sbd on a second loop device (`sbd create`, n1 and n2 allocated; the nodes run no
sbd daemon: only the fencing of a dead node is timed, which waits sbd's msgwait). Then n1 is started again, rejoins, and
the group moves back to it cleanly. An audit reads both mount tables every 100 ms throughout:
the bench fails if it ever sees two mounts. Everything is torn down in `finally`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

from tools import pcmk

BOTH = {"n1", "n2"}
PCMK_TS = re.compile(r"^(\w{3} [ \d]\d \d\d:\d\d:\d\d\.\d{3}) ")
STEPS = (  # (label, file under n2/, pattern) -- the last line matching after the kill
    ("diskhb: n1 fenced", "diskhb.log", "fenced: its pill was delivered"),
    ("pacemaker: n1 lost", "log-pacemaker/pacemaker.log", "Node n1 state is now lost"),
    ("the fence agent returned", "log-pacemaker/pacemaker.log",
     r"Operation 'reboot' \[\d+\] targeting n1 using fence-\w+ returned 0"),
    ("guard started", "log-pacemaker/pacemaker.log", "Result of start operation for guard on n2: ok"),
)


def _ts(line: str) -> float | None:
    m = PCMK_TS.match(line)
    year = datetime.datetime.now().year
    if m:
        return datetime.datetime.strptime(f"{year} {m.group(1)}", "%Y %b %d %H:%M:%S.%f").timestamp()
    try:  # diskhb: "2026-11-30 23:38:49,802 diskhb[33] ..."
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def steps(c: pcmk.PcmkCluster, killed_at: float) -> dict[str, float | None]:
    out = {}
    for label, rel, pat in STEPS:
        found = None
        try:
            with open(os.path.join(c.node_dir(2), rel), errors="replace") as f:
                for line in f:
                    if re.search(pat, line):
                        t = _ts(line)
                        if t is not None and t >= killed_at - 0.01 and found is None:
                            found = t - killed_at
        except OSError:
            pass
        out[label] = found
    return out


def stats(xs: list[float]) -> str:
    return f"min {min(xs):.2f}  median {statistics.median(xs):.2f}  max {max(xs):.2f} s  (n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--fencing", choices=("diskhb", "sbd"), default="diskhb",
                    help="the stonith device: fence_diskhb, or fence_sbd on its own loop device (comparison)")
    args = ap.parse_args()
    why = pcmk.missing() or (None if args.fencing == "diskhb" or shutil.which("sbd") and shutil.which("fence_sbd")
                             else "needs sbd and fence_sbd (Debian packages sbd, fence-agents)")
    if why:
        print(f"cannot run: {why}")
        return 2
    work = tempfile.mkdtemp(prefix="diskhb-pcmk-bench-", dir="/var/tmp")
    c = None
    try:
        c = pcmk.PcmkCluster(work, fencing=args.fencing)
        with pcmk.Audit(c) as audit:
            t0 = time.monotonic()
            c.start()
            c.wait(lambda: c.online(1) == BOTH and c.online(2) == BOTH, 90, "both nodes online")
            print(f"{os.cpu_count()} cores, {os.uname().release}; fencing {args.fencing}; membership formed in"
                  f" {time.monotonic() - t0:.1f} s", flush=True)
            c.configure(1)
            c.wait(lambda: c.mounted(1) and c.where(1) == "n1", 60, "the group on n1")
            totals, parts = [], {label: [] for label, _, _ in STEPS}
            for rep in range(args.reps):
                wall = time.time()
                took = c.failover(1, 2)
                c.wait(lambda: any(h.startswith("reboot of n1 successful") for h in c.fences(2)), 30, "the fence")
                st = steps(c, wall)
                totals.append(took)
                for k, v in st.items():
                    if v is not None:
                        parts[k].append(v)
                print(f"run {rep + 1}: SIGKILL n1 -> ext4 on n2 {took:.2f} s; "
                      + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} ?" for k, v in st.items()), flush=True)
                if rep + 1 < args.reps:
                    t1 = time.monotonic()
                    c.start_node(1)
                    c.wait(lambda: c.online(2) == BOTH and c.mounted(1) and c.where(2) == "n1", 120,
                           "n1 back with the group")
                    print(f"  n1 restarted, rejoined and took the group back in {time.monotonic() - t1:.1f} s",
                          flush=True)
        print(f"failover SIGKILL n1 -> ext4 mounted on n2 ({args.fencing}): {stats(totals)}")
        for k, xs in parts.items():
            if xs:
                print(f"  {k}: {stats(xs)}")
        print(f"audit: {audit.samples} samples, {len(audit.overlaps)} with two mounts")
        return 1 if audit.overlaps else 0
    finally:
        if c is not None:
            c.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
