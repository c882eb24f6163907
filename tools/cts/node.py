"""A test node's init: PID 1 of the node's own PID (and mount) namespace (python -m tools.cts.node).

Started by the CTS driver as `ip netns exec NS unshare --pid --fork --mount-proc -- python -m
tools.cts.node ...`, so the node has its own network, PID and mount namespaces. It
  - mounts one tmpfs per resource (the resource's mountpoint; gone with the namespace);
  - starts the daemon, and one consumer per resource in that resource's mountpoint (after
    --consumer-delay-s), restarting a consumer that ended (killed by a loss action, say) after
    RESPAWN_S; the consumer of --iscsi-resource writes through iSCSI to the LUN --iscsi (as
    --initiator, joining the node's registration: tools.cts.consumer);
  - reaps every process of the node (PID 1's duty);
  - SIGUSR1: a clean restart of the daemon (consumers stopped first, as Pacemaker stops a group
    before its guard); SIGTERM: the same stop, then exit.
Killing this process (the node's watchdog does, on expiry) kills every process of the node.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

RESPAWN_S = 0.3
LOOP_S = 0.05
STOP_WAIT_S = 15.0


class Node:
    def __init__(self, a):
        self.a = a
        self.daemon: subprocess.Popen | None = None
        self.consumers: dict[str, subprocess.Popen | None] = {r: None for r in a.resources}
        self.ended_at: dict[str, float] = {r: 0.0 for r in a.resources}
        self.starts = 0
        self.restart = self.stop = False
        self.consumers_from = time.monotonic() + a.consumer_delay_s

    def mountpoint(self, resource: str) -> str:
        return os.path.join(self.a.node_dir, resource)

    def start_daemon(self) -> None:
        self.starts += 1
        log = open(f"{self.a.log_prefix}.{self.starts}.log", "w")
        self.daemon = subprocess.Popen([sys.executable, "-m", "diskhb.cli", "run", "--config", self.a.config],
                                       stdout=log, stderr=subprocess.STDOUT, cwd=self.a.root)
        log.close()

    def start_consumer(self, r: str) -> None:
        iscsi = ["--iscsi", self.a.iscsi, "--initiator", self.a.initiator, "--cluster", self.a.cluster,
                 "--refused", self.a.refused] if r == self.a.iscsi_resource else []
        self.consumers[r] = subprocess.Popen(
            [sys.executable, "-m", "tools.cts.consumer", "--socket", self.a.socket, "--resource", r,
             "--node", str(self.a.node_id), "--audit", self.a.audit, *iscsi], cwd=self.mountpoint(r),
            env={**os.environ, "PYTHONPATH": self.a.root}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_consumers(self) -> None:
        for p in self.consumers.values():
            if p is not None and p.poll() is None:
                p.kill()
        for r, p in self.consumers.items():
            if p is not None:
                p.wait()
            self.consumers[r] = None

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for p in [self.daemon, *self.consumers.values()]:
                if p is not None and p.pid == pid:
                    p.returncode = p.returncode if p.returncode is not None else -1

    def run(self) -> int:
        for r in self.a.resources:
            os.makedirs(self.mountpoint(r), exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", f"cts-{r}", self.mountpoint(r)], check=True)
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "restart", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        self.start_daemon()
        while not self.stop:
            if self.restart:
                self.restart = False
                self.stop_consumers()
                self.stop_daemon()
                self.start_daemon()
            now = time.monotonic()
            for r, p in self.consumers.items():
                if now < self.consumers_from:
                    break
                if p is not None and p.poll() is not None:
                    self.consumers[r], self.ended_at[r] = None, now
                if self.consumers[r] is None and now - self.ended_at[r] >= RESPAWN_S:
                    self.start_consumer(r)
            self.reap()
            time.sleep(LOOP_S)
        self.stop_consumers()
        self.stop_daemon()
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--node-id", type=int, required=True)
    ap.add_argument("--node-dir", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--audit", required=True)
    ap.add_argument("--log-prefix", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--resources", type=lambda s: s.split(","), required=True)
    ap.add_argument("--consumer-delay-s", type=float, default=0.0,
                    help="start the consumers this long after the daemon (another node gets the resources first)")
    ap.add_argument("--iscsi-resource", default=None, help="the resource whose consumer writes through iSCSI")
    ap.add_argument("--iscsi", default=None, help="its LUN's iscsi:// URL")
    ap.add_argument("--initiator", default=None, help="its consumer's iSCSI initiator name")
    ap.add_argument("--cluster", default=None, help="the cluster's name (the consumer derives the node's key)")
    ap.add_argument("--refused", default=None, help="where its consumer records the writes that did not land")
    return Node(ap.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
