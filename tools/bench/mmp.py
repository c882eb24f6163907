"""MMP guard benchmarks (issue 4), side by side with the kernel's ext4 MMP on a loop device.

    python -m tools.bench.mmp [--reps 10] [--ext4-reps 2] [--skip-ext4] [--quick]

--quick: 3 repetitions of the fast cases and 1 of each ~20 s ext4 case (about 2 minutes).
Every line prints min / median / max over its repetitions.

diskhb (a region file on this machine's disk, O_DIRECT|O_DSYNC, resource interval 1000 ms):
  clean acquire      a Guard driven by the CLI's Runner over a never-used block (binding the name) and a CLEAN one
                     (after a release), in-process; and `diskhb mmp run RES -- true` wall time
  refusal, daemon    node 1's daemon holds it; node 2's daemon is asked (control socket), and
                     `diskhb mmp acquire --config` (CLI wall time, Python start included)
  refusal, no daemon a foreground holder bumps it; another node's classic path refuses at the
                     first change it sees
  takeover           the holder SIGKILLed: classic watch (2 x interval + 1 s) then the ballot;
                     with daemons, after a clean leave (fast path) and after a crash
ext4 (root; mkfs.ext4 -O mmp defaults, so kmmpd's interval is 5 s, as a default install has):
  mount of a clean filesystem, a second mount (another loop device on the same image) refused
  while mounted, e2mmpstatus while mounted, mount after a "crashed" holder (a running seq left
  on an unmounted image).
Everything started (daemons, holders, loop devices, mounts) is ended/removed in `finally`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from diskhb.control import request
from diskhb.mmp import ext4
from diskhb.mmp import format as mf
from diskhb.core import timing
from diskhb.mmp import foreground
from diskhb.mmp import guard as gd
from diskhb.mmp.steps import Claimant
from diskhb.mmp.runner import Runner
from diskhb.mmp.store import open_region_target
from diskhb.runtime import new_generation
from tools.bench.detection import DISKHB, ROOT, _free_port, _start, _stop, _wait

INTERVAL_MS = 1000
RESOURCE = f'[[resource]]\nname = "db"\ninterval_ms = {INTERVAL_MS}\non_loss = ["none"]\n'


def _stats(xs: list[float]) -> str:
    return f"min {min(xs):.3f} s, median {statistics.median(xs):.3f} s, max {max(xs):.3f} s (n={len(xs)})"


def _claimant(node_id: int, resource: str = "db") -> Claimant:
    return Claimant(node_id=node_id, generation=new_generation(), holder_name=f"bench{node_id}",
                    resource=resource, interval_ms=INTERVAL_MS, ceiling_ms=timing.mmp_ceiling_ms(INTERVAL_MS),
                    device="bench")


def _timed_acquire(region: str, node_id: int, resource: str = "db", *, create=True, wait_ms=0):
    """(seconds, outcome) of one in-process acquisition; outcome "acquired" or the refusal."""
    t = open_region_target(region, writable=True)
    try:
        runner = Runner(t)
        guard = gd.Guard(_claimant(node_id, resource), t.info, timing=timing.MmpTiming(INTERVAL_MS, 0),
                         ledger=runner.ledger, rand=runner.rand, now_ms=runner.clock_ms(), wait_ms=wait_ms,
                         create=create)
        t0 = time.monotonic()
        got, _, denied = foreground.acquire(runner, guard)
        took = time.monotonic() - t0
        if got is None:
            return took, f"refused: {denied.reason}"
        guard.release()
        runner.drive(guard)  # CLEAN
        return took, "acquired"
    finally:
        t.close()


def _format(path: str) -> None:
    subprocess.run(DISKHB + ["format", path, "--cluster", "bench", "--slots", "8", "--interval-ms", "200",
                             "--dead-ms", "2000"], check=True, cwd=ROOT, capture_output=True, timeout=120)


def bench_diskhb(reps: int) -> dict[str, list[float]]:
    work = tempfile.mkdtemp(prefix="diskhb-bench-mmp-", dir="/var/tmp")
    out: dict[str, list[float]] = {}
    procs: list[subprocess.Popen] = []
    try:
        region = os.path.join(work, "r.img")
        _format(region)
        # Clean acquire: a never-used block (instance 1 binds the name), then CLEAN after release.
        out["acquire, never used (binds the name)"] = [
            _timed_acquire(region, 1, f"r{i}")[0] for i in range(min(reps, 6))]
        out["acquire, CLEAN after a release"] = [_timed_acquire(region, 1 + i % 2, "r0")[0] for i in range(reps)]
        cli = []
        for i in range(reps):
            t0 = time.monotonic()
            subprocess.run(DISKHB + ["mmp", "run", "r0", "--region", region, "--node-id", "3", "--", "true"],
                           check=True, cwd=ROOT, capture_output=True, timeout=120)
            cli.append(time.monotonic() - t0)
        out["`diskhb mmp run r0 -- true` wall (CLI, Python start incl.)"] = cli

        # No daemon: a foreground holder; the classic path refuses at the first change seen.
        refusals, takeovers = [], []
        for i in range(max(2, reps // 3)):
            holder = subprocess.Popen(DISKHB + ["mmp", "acquire", "r0", "--region", region, "--node-id", "1",
                                                "--interval-ms", str(INTERVAL_MS), "--run-dir", f"{work}/run"],
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(holder)
            _wait(lambda: _state(region, "r0") == "held", 20, "the foreground holder")
            took, what = _timed_acquire(region, 2, "r0", create=False)
            assert what.startswith("refused"), what
            refusals.append(took)
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            t0 = time.monotonic()
            took, what = _timed_acquire(region, 2, "r0", create=False, wait_ms=30_000)
            assert what == "acquired", what
            takeovers.append(time.monotonic() - t0)
        out["refusal of a live holder, no daemon (classic watch)"] = refusals
        out["takeover after the holder's SIGKILL, no daemon (classic)"] = takeovers

        # Daemons: node 1 holds; node 2's daemon refuses at once; fast take-over after a leave.
        d_refuse, d_cli, d_acq, d_left, d_crash = [], [], [], [], []
        for i in range(2 * max(1, reps // 3)):  # even: as many clean leaves as crashes
            (p1, _), (p2, _) = (_start(work, region, n, _free_port(), RESOURCE) for n in (1, 2))
            procs += [p1, p2]
            s1, s2 = (os.path.join(work, "run", f"diskhb-bench-{n}.sock") for n in (1, 2))
            _wait(lambda: _sees_alive(s1, 2) and _sees_alive(s2, 1), 20, "daemons up")
            t0 = time.monotonic()
            assert request(s1, "mmp-acquire db 0 1", 60)["ok"]
            d_acq.append(time.monotonic() - t0)
            t0 = time.monotonic()
            r = request(s2, "mmp-acquire db 0 0", 60)
            d_refuse.append(time.monotonic() - t0)
            assert not r["ok"], r
            cfg2 = os.path.join(work, "n2.toml")
            t0 = time.monotonic()
            r = subprocess.run(DISKHB + ["mmp", "acquire", "db", "--config", cfg2], cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
            d_cli.append(time.monotonic() - t0)
            assert r.returncode == 1, r.stderr
            if i % 2 == 0:  # clean leave: node 1 releases, then publishes LEFT
                p1.send_signal(signal.SIGTERM)
                p1.wait(20)
                _wait(lambda: _state_of(s2, 1) == "left", 20, "node 1 left")
                t0 = time.monotonic()
                r = request(s2, "mmp-acquire db 30000 0", 60)
                assert r["ok"], r
                d_left.append(time.monotonic() - t0)
            else:  # crash: node 2 must watch the block for the classic wait
                p1.send_signal(signal.SIGKILL)
                p1.wait(20)
                t0 = time.monotonic()
                r = request(s2, "mmp-acquire db 30000 0", 60)
                assert r["ok"], r
                d_crash.append(time.monotonic() - t0)
            assert request(s2, "mmp-release db", 60)["ok"]
            _stop([p1, p2])
        out["acquire by a daemon (CLEAN)"] = d_acq
        out["refusal, holder's daemon alive (daemon asked)"] = d_refuse
        out["refusal, holder's daemon alive (`mmp acquire --config` wall)"] = d_cli
        out["takeover after the holder's daemon left cleanly (fast path)"] = d_left
        out["takeover after the holder's daemon was SIGKILLed (classic)"] = d_crash
        return out
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def _state(region: str, resource: str) -> str | None:
    t = open_region_target(region, writable=False)
    try:
        found = Runner(t).find(resource)
        return found.view.seq.state if found else None
    finally:
        t.close()


def _snapshot(sock: str) -> dict | None:
    try:
        return request(sock, "status", 5)
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _state_of(sock: str, node_id: int) -> str | None:
    snap = _snapshot(sock)
    return next((n["state"] for n in (snap or {}).get("nodes", []) if n["id"] == node_id), None)


def _sees_alive(sock: str, node_id: int) -> bool:
    return _state_of(sock, node_id) == "alive"


# -- ext4 ------------------------------------------------------------------------------------


def _run(*argv: str, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def set_ext4_mmp_seq(img: str, seq: int) -> None:
    """Leave `seq` in an unmounted ext4 image's MMP block as a holder would (checksum valid).
    debugfs set_mmp_value cannot: debugfs -w runs MMP itself and writes CLEAN on close."""
    with open(img, "r+b") as f:
        f.seek(ext4.SUPERBLOCK_OFFSET)
        sb = ext4.parse_super(f.read(ext4.SUPERBLOCK_BYTES))
        off = sb.mmp_block * sb.block_size
        f.seek(off)
        block = bytearray(f.read(ext4.MMP_STRUCT_BYTES))
        struct.pack_into("<I", block, 4, seq)
        struct.pack_into("<I", block, 1020, ext4._raw_crc32c(sb.csum_seed, bytes(block[:1020])))
        f.seek(off)
        f.write(block)
        f.flush()
        os.fsync(f.fileno())


def bench_ext4(reps: int, update_interval_s: int | None = None) -> dict[str, list[float]]:
    work = tempfile.mkdtemp(prefix="diskhb-bench-ext4-", dir="/var/tmp")
    loops: list[str] = []
    mounts: list[str] = []
    out: dict[str, list[float]] = {k: [] for k in ("mount, clean (kernel MMP)", "second mount refused while mounted",
                                                   "e2mmpstatus while mounted (in use)",
                                                   "`diskhb mmp inspect` while mounted (in use)",
                                                   "mount after the holder crashed (stale seq)")}
    try:
        img = os.path.join(work, "fs.img")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        extra = ["-E", f"mmp_update_interval={update_interval_s}"] if update_interval_s else []
        _run("mkfs.ext4", "-q", "-F", "-O", "mmp", *extra, img)
        for n in (1, 2):
            loops.append(_run("losetup", "--find", "--show", img).stdout.strip())
            os.mkdir(os.path.join(work, f"m{n}"))
        m1, m2 = os.path.join(work, "m1"), os.path.join(work, "m2")
        for _ in range(reps):
            t0 = time.monotonic()
            _run("mount", "-t", "ext4", loops[0], m1)
            out["mount, clean (kernel MMP)"].append(time.monotonic() - t0)
            mounts.append(m1)
            t0 = time.monotonic()
            r = _run("e2mmpstatus", loops[1], check=False)
            out["e2mmpstatus while mounted (in use)"].append(time.monotonic() - t0)
            assert r.returncode == 1, r
            t0 = time.monotonic()
            r = subprocess.run(DISKHB + ["mmp", "inspect", loops[1]], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
            out["`diskhb mmp inspect` while mounted (in use)"].append(time.monotonic() - t0)
            assert r.returncode == 1, r
            t0 = time.monotonic()
            r = _run("mount", "-t", "ext4", loops[1], m2, check=False)
            out["second mount refused while mounted"].append(time.monotonic() - t0)
            assert r.returncode != 0, "the kernel let a second mount in"
            _run("umount", m1)
            mounts.remove(m1)
            # A crashed holder leaves a running seq; the next mount must watch it.
            _run("losetup", "-d", loops[0])
            loops.remove(loops[0])
            set_ext4_mmp_seq(img, 4242)
            loops.insert(0, _run("losetup", "--find", "--show", img).stdout.strip())
            t0 = time.monotonic()
            _run("mount", "-t", "ext4", loops[0], m1)
            out["mount after the holder crashed (stale seq)"].append(time.monotonic() - t0)
            mounts.append(m1)
            _run("umount", m1)
            mounts.remove(m1)
        return out
    finally:
        for m in mounts:
            _run("umount", m, check=False)
        for dev in loops:
            _run("losetup", "-d", dev, check=False)
        still = [m for m in mounts if os.path.ismount(m)]
        if still:  # never rmtree through a mount point that would not go
            print(f"ext4: left {work} in place: still mounted: {still}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--ext4-reps", type=int, default=2)
    ap.add_argument("--skip-ext4", action="store_true")
    ap.add_argument("--ext4-interval", type=int, default=None,
                    help="mkfs.ext4 -E mmp_update_interval=N (default: mkfs's own, 5 s); the kernel floors its check at 5 s")
    ap.add_argument("--skip-diskhb", action="store_true")
    ap.add_argument("--quick", action="store_true", help="3 fast repetitions, 1 of each slow ext4 case")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.ext4_reps = 3, 1
    e2 = subprocess.run(["dumpe2fs", "-V"], capture_output=True, text=True, timeout=10).stderr.split("\n")[0]
    print(f"machine: {os.cpu_count()} cores, Linux {os.uname().release}, {e2.strip()}, reps {a.reps}"
          f" / ext4 {a.ext4_reps}", flush=True)
    if not a.skip_diskhb:
        for name, xs in bench_diskhb(a.reps).items():
            print(f"diskhb  {name}: {_stats(xs)}", flush=True)
    if not a.skip_ext4:
        if os.geteuid() != 0:
            print("ext4: skipped (needs root for loop devices and mount)", file=sys.stderr)
        else:
            for name, xs in bench_ext4(a.ext4_reps, a.ext4_interval).items():
                print(f"ext4    {name}: {_stats(xs)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
