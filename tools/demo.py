"""`make demo`: a 3-node cluster on a file-backed region, one crash, one clean leave. No root.

Formats a region file, makes a network key, starts three `diskhb run` daemons as separate
processes (each beating on the disk region and on an authenticated UDP link over loopback), shows
status,
SIGKILLs node3 and shows it declared dead, stops node2 cleanly and shows it as left, then tears
everything down (even on Ctrl-C or failure). Bounded: every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISKHB = [sys.executable, "-m", "diskhb.cli"]
INTERVAL_MS, DEAD_MS = 200, 2000
WAIT_S = 15


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk_dir() -> str:
    """A temp dir on a filesystem with O_DIRECT (tmpfs has none)."""
    for base in (None, "/var/tmp", ROOT):
        d = tempfile.mkdtemp(prefix="diskhb-demo-", dir=base)
        probe = os.path.join(d, "probe")
        try:
            fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
            os.close(fd)
            os.unlink(probe)
            return d
        except OSError:
            shutil.rmtree(d, ignore_errors=True)
    raise SystemExit("demo: no directory with O_DIRECT support found")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def diskhb(*args: str, check: bool = True) -> str:
    r = subprocess.run(DISKHB + list(args), capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check and r.returncode != 0:
        raise SystemExit(f"demo: diskhb {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def daemon_view(run_dir: str, region: str) -> dict:
    return json.loads(diskhb("status", region, "--json", "--run-dir", run_dir))


def wait_for(pred, what: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        view = pred()
        if view:
            return view
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    work = disk_dir()
    region = os.path.join(work, "region.img")
    run_dir = os.path.join(work, "run")
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        say(f"format a region file ({region})")
        print(diskhb("format", region, "--cluster", "demo", "--slots", "8",
                     "--interval-ms", str(INTERVAL_MS), "--dead-ms", str(DEAD_MS)).strip())

        key = os.path.join(work, "authkey")
        say("make the network key (HMAC-SHA256, mode 0600)")
        print(diskhb("keygen", key).strip())

        say("start node1, node2, node3 (separate processes; regions: the disk and a UDP link on loopback)")
        udp = {i: free_port(socket.SOCK_DGRAM) for i in (1, 2, 3)}
        for i in (1, 2, 3):
            name = f"node{i}"
            cfg = os.path.join(work, f"{name}.toml")
            peers = ", ".join(f'"127.0.0.1:{udp[j]}"' for j in (1, 2, 3) if j != i)
            with open(cfg, "w") as f:
                f.write(f'[node]\nname = "{name}"\nid = {i}\nrun_dir = "{run_dir}"\n'
                        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
                        f'[[region]]\ntype = "disk"\nname = "disk"\npath = "{region}"\n'
                        f'[[region]]\ntype = "net"\nname = "lan"\nbind = "127.0.0.1"\nport = {udp[i]}\n'
                        f'peers = [{peers}]\nkey = "{key}"\n')
            logs[name] = open(os.path.join(work, f"{name}.log"), "w+")
            procs[name] = subprocess.Popen(DISKHB + ["run", "--config", cfg], stdout=logs[name],
                                           stderr=subprocess.STDOUT, cwd=ROOT)
            print(f"{name}: pid {procs[name].pid}")

        def all_alive():
            v = daemon_view(run_dir, region)
            return v if v["source"] == "daemon" and sum(n["state"] == "alive" for n in v["nodes"]) == 3 else None

        wait_for(all_alive, "three live nodes")
        say("status (disk view, no daemon needed)")
        print(diskhb("status", region, "--no-daemon"))

        say("SIGKILL node3: peers must declare it dead after the dead time")
        t_kill = time.monotonic()
        procs["node3"].kill()
        procs["node3"].wait(10)

        def node3_dead():
            v = daemon_view(run_dir, region)
            return v if v["source"] == "daemon" and any(n["id"] == 3 and n["state"] == "dead" for n in v["nodes"]) else None

        wait_for(node3_dead, "node3 declared dead")
        print(f"node3 declared dead {time.monotonic() - t_kill:.2f} s after SIGKILL (dead time {DEAD_MS} ms)")
        print(diskhb("status", region, "--run-dir", run_dir))

        say("stop node2 cleanly (SIGTERM): it publishes LEFT, peers show it as left, not dead")
        procs["node2"].terminate()
        procs["node2"].wait(10)

        def node2_left():
            v = daemon_view(run_dir, region)
            return v if v["source"] == "daemon" and any(n["id"] == 2 and n["state"] == "left" for n in v["nodes"]) else None

        wait_for(node2_left, "node2 shown as left")
        print(diskhb("status", region, "--run-dir", run_dir))

        say("what node1 logged")
        logs["node1"].flush()
        with open(logs["node1"].name) as f:
            print(f.read().rstrip())
        say("demo done: tearing down")
        return 0
    finally:
        for name, p in procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for f in logs.values():
            f.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
