"""Client side of a node daemon's control socket (run_dir/diskhb-<cluster>-<id>.sock).

One request line, one JSON answer, then the daemon closes the connection: `status` (the
daemon's snapshot, see diskhb.daemon.Daemon.snapshot), `mmp-acquire NAME WAIT_MS CREATE(0|1)`
and `mmp-release NAME` (see diskhb.mmp.held). Every wait and every answer is bounded.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import time

STATUS_TIMEOUT_S = 4.0
ANSWER_BYTES_MAX = 64 << 20  # a 2000-node snapshot is a few MiB
SOCKETS_MAX = 64  # daemons of one host looked at (one per cluster and node id)


class ControlError(Exception):
    """No answer: a stale socket, a daemon that died or stopped answering, a garbled reply."""


def request(sock_path: str, line: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s  # for the whole exchange, not per recv
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(sock_path)
            s.sendall(line.encode() + b"\n")
            chunks, size = [], 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > ANSWER_BYTES_MAX:
                    raise ControlError(f"{sock_path}: answer larger than {ANSWER_BYTES_MAX} bytes")
        answer = json.loads(b"".join(chunks))
    except (OSError, ValueError) as e:
        raise ControlError(f"{sock_path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{sock_path}: answer is not a JSON object")
    return answer


def find_daemon(path: str, run_dir: str, node_id: int | None = None) -> tuple[str, dict] | None:
    """(socket path, snapshot) of a running daemon that has `path` among its disk regions
    (and, if given, is node `node_id`), or None when there is none that answers."""
    want = os.path.realpath(path)
    for sock_path in sorted(glob.glob(os.path.join(run_dir, "diskhb-*.sock")))[:SOCKETS_MAX]:
        try:
            snap = request(sock_path, "status", STATUS_TIMEOUT_S)
        except ControlError:
            continue  # a stale socket or a busy daemon: the caller falls back to the disk
        if node_id is not None and (snap.get("node") or {}).get("id") != node_id:
            continue
        for r in snap.get("regions", []):
            if r.get("path") and os.path.realpath(r["path"]) == want:
                return sock_path, snap
    return None
