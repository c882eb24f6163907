"""python -m tools.cts [--schedules N] [--seed S] [--keep] [--workdir DIR] [--break WHAT,...] [--scsi-pr]

The cluster test system: three real daemons in their own namespaces (tools.cts.cluster), each
with a consumer per guarded resource writing an audit line per write while it holds it, driven
through seeded fault schedules (tools.cts.schedule); after each, the rules of tools.cts.checks.
Schedule k of a run has seed S + k, printed with its faults: `--schedules 1 --seed S+k` replays
it (the same faults at the same moments; the daemons' own timing is real, so not every outcome
is bit-for-bit the same). With --scsi-pr the nodes also fence by SCSI-3 persistent reservations
on a LUN of a private tgtd (tools.tgt, reached over the test net: cluster.py), guarding a third
resource whose consumer writes through iSCSI (consumer.py C1-C3; checks.py PR-FENCED-WRITE,
LUN-LAST-WRITE). Exit 0: every schedule held every rule; 1: a violation (the schedule's logs and
audit are kept, and named); 2: the cluster could not be set up.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import sys
import tempfile
import time

from diskhb.core.types import parse_hex_id
from tools.cts import checks
from tools.cts import schedule as sch
from tools.cts.cluster import BREAKAGES, CONSUMER_DELAY_S, DEAD_MS, INTERVAL_MS, LUN_RESOURCE, NODES, RESOURCES, \
    CtsCluster

READY_TIMEOUT_S = 40.0
SETTLE_TIMEOUT_S = 25.0
POLL_S = 0.2


class SetupFailed(Exception):
    pass


def _wait_ready(c: CtsCluster) -> None:
    """Every node quorate, every resource held by one whose consumer writes, every consumer started."""
    start = time.monotonic()
    deadline = start + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        views = {i: c.status(i) for i in NODES}
        quorate = all(v and (v.get("quorum") or {}).get("quorate") for v in views.values())
        writes = {w.resource for w in checks.read_audit(c.audit)}
        if quorate and writes >= set(c.resources) and time.monotonic() - start > CONSUMER_DELAY_S:
            return
        time.sleep(POLL_S)
    raise SetupFailed(f"the cluster did not come up within {READY_TIMEOUT_S:g} s (logs in {c.sched_dir})")


def _apply(c: CtsCluster, f: sch.Fault, end: bool) -> None:
    i = f.node
    if f.kind == "kill":
        c.signal_daemon(i, 9)
    elif f.kind == "freeze":
        c.cont(i) if end else c.freeze(i)
    elif f.kind == "link":
        c.set_link(i, end)
    elif f.kind in ("disk-eio", "disk-hang", "disk-slow"):
        mode = {"disk-eio": "eio", "disk-hang": "hang", "disk-slow": f"slow:{f.arg}"}[f.kind]
        c.set_disk(i, "ok" if end else mode)
    elif f.kind == "isolate":
        c.set_link(i, end)
        c.set_disk(i, "ok" if end else "hang")
    elif f.kind == "reset":
        c.reset(i)
    elif f.kind == "restart":
        c.restart(i)


def _heal(c: CtsCluster) -> None:
    for i in NODES:
        c.cont(i)
        c.set_link(i, True)
        c.set_disk(i, "ok")


def _settled(c: CtsCluster, healed_t: float, rule: str = "TAKEN-OVER") -> list[str]:
    """What DETECTED and TAKEN-OVER (or RECOVERED: every node back) still miss (empty: settled)."""
    views = {i: c.status(i) for i in NODES}
    running = [i for i, v in views.items() if v and v["phase"] == "running" and (v.get("quorum") or {}).get("quorate")]
    gone = [i for i in NODES if c.daemon_pid.get(i) is None]
    missing = [f"RECOVERED: node {i} is not running and quorate" for i in NODES
               if rule == "RECOVERED" and i not in running]
    for o in running:
        for d in gone:
            st = next((n["state"] for n in views[o]["nodes"] if n["id"] == d), None)
            if st not in ("dead", "left", None):
                missing.append(f"DETECTED: node {o} still sees node {d} {st} though its daemon is gone")
    if not running:
        return []
    writes = checks.read_audit(c.audit)
    for r in c.resources:
        holders = [i for i, v in views.items() if v and any(m["resource"] == r and m["state"] == "held"
                                                            for m in v.get("mmp") or [])]
        if len(holders) != 1:
            missing.append(f"{rule}: {r} is held by {holders or 'no running node'}")
            continue
        gen = parse_hex_id(views[holders[0]]["node"]["generation"])
        if not any(w.resource == r and w.node == holders[0] and w.generation == gen and w.t > healed_t for w in writes):
            missing.append(f"{rule}: {r}: node {holders[0]} holds it but its consumer has not written since")
    return missing


def _settle(c: CtsCluster, since: float, rule: str) -> list[str]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (missing := _settled(c, since, rule)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return missing


def run_one(c: CtsCluster, s: sch.Schedule, sched_dir: str, stats: collections.Counter) -> list[str]:
    c.begin(sched_dir)
    fired0 = {i: d.state().get("fired", 0) for i, d in c.dogs.items()}
    try:
        _wait_ready(c)
        t0 = time.monotonic()
        steps = [(f.at_s, 0, f, False) for f in s.faults] + \
                [(f.at_s + f.duration_s, 1, f, True) for f in s.faults if f.duration_s]
        for at, _, f, end in sorted(steps, key=lambda x: (x[0], x[1])):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            _apply(c, f, end)
        time.sleep(max(0.0, t0 + s.heal_s - time.monotonic()))
        _heal(c)
        healed = time.monotonic()
        missing = _settle(c, healed, "TAKEN-OVER")
        # The operator's part: every node that is down or fenced itself is restarted (a new
        # generation); the whole cluster must come back and serve again (RECOVERED).
        views = {i: c.status(i) for i in NODES}
        out = [i for i, v in views.items() if not v or v["phase"] != "running"]
        if not any(v and v["phase"] == "running" and (v.get("quorum") or {}).get("quorate") for v in views.values()):
            stats["healed without a quorate node"] += 1
        if out and not missing:
            stats["operator restarts"] += len(out)
            for i in out:
                c.restart(i)
            missing = _settle(c, time.monotonic(), "RECOVERED")
    finally:
        marks = list(c.timeline.marks)
        for i, d in c.dogs.items():  # before end(): its kills leave armed watchdogs that fire
            stats["watchdog resets"] += d.state().get("fired", 0) - fired0[i]
        c.end()
    lun = checks.read_lun(c.tgt.backing_file(c.lun_iqn), LUN_RESOURCE) if c.scsi_pr else []
    offset = time.time() - time.monotonic()
    events = [ev for i in NODES for path in c.logs(i) for ev in checks.parse_log(path, i, offset)]
    writes = checks.read_audit(c.audit)
    h = checks.History(marks, events, INTERVAL_MS / 1000, DEAD_MS / 1000, NODES)
    for ev in events:
        stats[{"death": "deaths declared", "victim": "victims named", "pill": "pills written",
               "fenced": f"fences verified ({ev.detail})", "self-fenced": f"self-fences ({ev.detail})",
               "beating": "incarnations", "read-only": "READ_ONLY published", "takeover": "takeovers (log)"}[ev.kind]] += 1
    stats["writes"] += len(writes)
    if c.scsi_pr:
        stats["writes landed on the LUN"] += sum(1 for w in writes if w.done)
        for *_, outcome in checks.read_refused(c.refused):
            stats[{"REFUSED": "LUN writes refused (reservation conflict)", "FAILED": "LUN writes failed",
                   "UNKNOWN": "LUN writes unanswered", "JOIN": "LUN joins refused"}.get(outcome, outcome)] += 1
    stats["holder changes"] += _changes(writes)
    return missing + checks.judge(writes, h, lun)


def _changes(writes: list[checks.Write]) -> int:
    last: dict[str, tuple] = {}
    n = 0
    for w in writes:
        h = (w.node, w.generation, w.epoch)
        if w.resource in last and last[w.resource] != h:
            n += 1
        last[w.resource] = h
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep every schedule's logs and audit, not only failed ones")
    ap.add_argument("--workdir", default=None, help="where to work [default: a new directory in /var/tmp]")
    ap.add_argument("--net", type=int, default=9, help="the test network's number (10.77.NET.0/24)")
    ap.add_argument("--scsi-pr", action="store_true",
                    help="fence by SCSI-PR too, on a private tgtd's LUN guarding a third resource, written through"
                         " iSCSI")
    ap.add_argument("--break", dest="broken", default="", metavar="WHAT,...",
                    help=f"break the cluster on purpose, to see the checks fail: {', '.join(sorted(BREAKAGES))}")
    a = ap.parse_args()
    # SIGTERM ends the run the way Ctrl-C does: through the finally blocks, which kill every node
    # (unshare's --kill-child only fires when unshare itself dies) and delete the namespaces
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = a.workdir or tempfile.mkdtemp(prefix="diskhb-cts-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    stats: collections.Counter = collections.Counter()
    failed: list[int] = []
    t_start = time.monotonic()
    resources = RESOURCES + (("lun (scsi-pr)",) if a.scsi_pr else ())
    print(f"cts: {len(NODES)} nodes, interval {INTERVAL_MS} / dead {DEAD_MS} ms, resources {', '.join(resources)};"
          f" {a.schedules} schedule(s) from seed {a.seed}; work in {work}", flush=True)
    try:
        c = CtsCluster(work, a.net, broken=frozenset(filter(None, a.broken.split(","))), scsi_pr=a.scsi_pr)
    except Exception as e:  # noqa: BLE001 - one line for the operator
        print(f"cts: cannot set the cluster up: {e}", file=sys.stderr)
        return 2
    try:
        for k in range(a.schedules):
            s = sch.make(a.seed + k, len(NODES))
            sched_dir = os.path.join(work, f"seed{s.seed}")
            t = time.monotonic()
            try:
                bad = run_one(c, s, sched_dir, stats)
            except SetupFailed as e:
                print(f"cts: seed {s.seed}: {e}", file=sys.stderr)
                return 2
            stats["schedules"] += 1
            if bad:
                failed.append(s.seed)
                print(f"seed {s.seed}: {len(bad)} VIOLATION(S) ({time.monotonic() - t:.1f} s)\n{s.text()}", flush=True)
                for line in bad:
                    print(f"  {line}", flush=True)
                print(f"  logs and audit kept in {sched_dir}; replay: python -m tools.cts --schedules 1 --seed"
                      f" {s.seed}{' --scsi-pr' if a.scsi_pr else ''}", flush=True)
            else:
                faults = ", ".join(f"{f.kind} n{f.node}" for f in s.faults)
                print(f"seed {s.seed}: ok ({time.monotonic() - t:.1f} s; {faults})", flush=True)
                if not a.keep:
                    shutil.rmtree(sched_dir, ignore_errors=True)
    finally:
        c.close()
        if not a.keep and not failed and a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"cts: {stats['schedules']} schedule(s), {len(failed)} with violations, {time.monotonic() - t_start:.0f} s",
          flush=True)
    for key in sorted(stats):
        if key != "schedules":
            print(f"  {key}: {stats[key]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
