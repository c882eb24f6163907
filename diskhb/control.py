"""A node daemon's control socket (run_dir/diskhb-<cluster>-<id>.sock): the wire format in one
place, the client, and the server (netpath/wire.py's rule: encoded and parsed in one module).

Protocol: one request line, one JSON answer line, then the daemon closes the connection.
    status                          the daemon's snapshot (diskhb.core.node.NodeCore.snapshot)
    peer ID                         what the daemon's liveness knows of node ID (the MMP fast paths
                                    of a CLI process on this node: {"state", "generation"})
    mmp-acquire NAME WAIT_MS 0|1    acquire NAME and keep holding it (1: bind a new name)
    mmp-release NAME                write CLEAN and stop holding it
    fence ID 0|1 [METHOD]           fence node ID (fencing FD10; 1: even without quorum; METHOD:
                                    only that one), answered at once: {"ok": true, "attempt", ...};
                                    status shows the outcome
    unfence                         register this node's PR key again on every LUN where it is
                                    missing (diskhb.fencing.keeper PK4); answered when done:
                                    {"ok": true, "luns": [...]} or {"ok": false, "error"}
Answers to mmp-*: {"ok": true, ...} or {"ok": false, "exit": 1|2, "error": "one line"}.
Every generation in an answer is a hex string ("0x5fa3...", diskhb.core.types.hex_id): operators
read this socket with jq and monitoring through /status, which would round a 64-bit number.
Every wait and every answer is bounded; at most CLIENTS_MAX connections are served at once, and
at most MMP_REQUESTS_MAX of them may be mmp-* (an acquisition may take a classic watch).
"""

from __future__ import annotations

import glob
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from diskhb.mmp.format import RESOURCE_NAME_BYTES_MAX

STATUS_TIMEOUT_S = 4.0
ANSWER_BYTES_MAX = 64 << 20  # a 2000-node snapshot is a few MiB
REQUEST_BYTES_MAX = 512
SOCKETS_MAX = 64  # daemons of one host looked at (one per cluster and node id)
CLIENTS_MAX = 16
MMP_REQUESTS_MAX = 8
WAIT_MS_MAX = 24 * 3600 * 1000


class ControlError(Exception):
    """No answer: a stale socket, a daemon that died or stopped answering, a garbled reply.

    `gone` is True when nobody listens (no socket file, or connection refused: the daemon
    exited or was killed), False when a listener did not answer in time or answered garbage
    (a frozen or overloaded daemon: it may still act)."""

    def __init__(self, text: str, *, gone: bool = False):
        super().__init__(text)
        self.gone = gone


class BadRequest(ValueError):
    pass


# -- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    pass


@dataclass(frozen=True, slots=True)
class Peer:
    node_id: int


@dataclass(frozen=True, slots=True)
class Acquire:
    resource: str
    wait_ms: int
    create: bool


@dataclass(frozen=True, slots=True)
class Release:
    resource: str


@dataclass(frozen=True, slots=True)
class FenceNode:
    node_id: int
    force: bool
    method: str = ""  # "": the configured order


@dataclass(frozen=True, slots=True)
class Unfence:
    pass


FENCE_METHOD_NAMES = ("scsi-pr", "pill", "agent")  # diskhb.config.FENCE_METHODS (no import: config imports much)
Request = Status | Peer | Acquire | Release | FenceNode | Unfence


def encode(req: Request) -> str:
    if isinstance(req, Status):
        return "status"
    if isinstance(req, Peer):
        return f"peer {req.node_id}"
    if isinstance(req, Acquire):
        return f"mmp-acquire {req.resource} {req.wait_ms} {int(req.create)}"
    if isinstance(req, Release):
        return f"mmp-release {req.resource}"
    if isinstance(req, FenceNode):
        return f"fence {req.node_id} {int(req.force)}" + (f" {req.method}" if req.method else "")
    if isinstance(req, Unfence):
        return "unfence"
    raise TypeError(req)


def parse(line: str) -> Request:
    words = line.split()
    if words == ["status"]:
        return Status()
    if len(words) == 2 and words[0] == "peer" and words[1].isdigit():
        return Peer(int(words[1]))
    if len(words) == 4 and words[0] == "mmp-acquire" and words[2].isdigit() and words[3] in ("0", "1") \
            and len(words[1].encode()) <= RESOURCE_NAME_BYTES_MAX:
        return Acquire(words[1], min(int(words[2]), WAIT_MS_MAX), words[3] == "1")
    if len(words) == 2 and words[0] == "mmp-release" and len(words[1].encode()) <= RESOURCE_NAME_BYTES_MAX:
        return Release(words[1])
    if len(words) in (3, 4) and words[0] == "fence" and words[1].isdigit() and len(words[1]) <= 6 \
            and words[2] in ("0", "1") and (len(words) == 3 or words[3] in FENCE_METHOD_NAMES):
        return FenceNode(int(words[1]), words[2] == "1", words[3] if len(words) == 4 else "")
    if words == ["unfence"]:
        return Unfence()
    raise BadRequest(f"bad request {line[:64]!r}")


# -- client ------------------------------------------------------------------------------------------


def request(sock_path: str, req: Request | str, timeout_s: float) -> dict:
    line = req if isinstance(req, str) else encode(req)
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
        gone = isinstance(e, (FileNotFoundError, ConnectionRefusedError))
        raise ControlError(f"{sock_path}: {getattr(e, 'strerror', None) or e}", gone=gone) from None
    if not isinstance(answer, dict):
        raise ControlError(f"{sock_path}: answer is not a JSON object")
    return answer


def socket_path(run_dir: str, cluster: str, node_id: int) -> str:
    return os.path.join(run_dir, f"diskhb-{cluster}-{node_id}.sock")


def node_sockets(run_dir: str, cluster: str | None, node_id: int) -> list[str]:
    """The control sockets node `node_id`'s daemon may have in run_dir: its one path when the
    cluster name is known, else every cluster's (the name then comes from the region)."""
    if cluster is not None:
        return [socket_path(run_dir, cluster, node_id)]
    return sorted(glob.glob(os.path.join(run_dir, f"diskhb-*-{node_id}.sock")))[:SOCKETS_MAX]


def find_daemon(path: str | None, run_dir: str, node_id: int | None = None,
                cluster: str | None = None) -> tuple[str, dict] | None:
    """(socket path, snapshot) of the first running daemon (in socket name order) that has `path`
    among its disk regions (any, if None) and, if given, is node `node_id` of `cluster`; None when
    there is none that answers. Several daemons of one host serve the same region only in tests
    and demos: a node id (`status --config`) picks one."""
    want = None if path is None else os.path.realpath(path)
    name = f"diskhb-{glob.escape(cluster) if cluster else '*'}-{node_id if node_id is not None else '*'}.sock"
    for sock_path in sorted(glob.glob(os.path.join(run_dir, name)))[:SOCKETS_MAX]:
        try:
            snap = request(sock_path, Status(), STATUS_TIMEOUT_S)
        except ControlError:
            continue  # a stale socket or a busy daemon: the caller falls back to the disk
        if node_id is not None and (snap.get("node") or {}).get("id") != node_id:
            continue
        if want is None or any(r.get("path") and os.path.realpath(r["path"]) == want
                               for r in snap.get("regions", [])):
            return sock_path, snap
    return None


# -- server ------------------------------------------------------------------------------------------


class Answer:
    """Where the daemon's loop puts the answer to one request; the connection's thread waits."""

    __slots__ = ("event", "value")

    def __init__(self):
        self.event = threading.Event()
        self.value: dict | None = None

    def set(self, value: dict) -> None:
        self.value = value
        self.event.set()


def answer_wait_s(req: Request) -> float:
    """How long a connection waits for the loop's answer (an acquisition may take a classic
    watch of the slowest interval a block may carry, 2 x 300 s + 1 s, and the ballot)."""
    if isinstance(req, Acquire):
        return req.wait_ms / 1000 + 2 * 300 + 1 + 60
    if isinstance(req, Release):
        return 60.0
    return STATUS_TIMEOUT_S - 1


class Server:
    """Accepts connections on a thread; each is served on a thread of its own (bounded)."""

    def __init__(self, path: str, submit: Callable[[Request, Answer], bool], log):
        self.path = path
        self.submit = submit  # hands a request to the daemon's loop; False when its inbox is full
        self.log = log
        self._clients = threading.BoundedSemaphore(CLIENTS_MAX)
        self._mmp = threading.BoundedSemaphore(MMP_REQUESTS_MAX)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of an earlier run; our slot claim proved it dead
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(path)
            os.chmod(path, 0o660)
            s.listen(CLIENTS_MAX)
        except OSError:
            s.close()
            raise
        self.sock = s
        threading.Thread(target=self._accept, name="control", daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self._clients.acquire(blocking=False):
                _send(conn, {"ok": False, "exit": 1, "error": f"{CLIENTS_MAX} control clients already; try again"})
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-client", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        mmp = False
        try:
            conn.settimeout(STATUS_TIMEOUT_S)
            try:
                line = conn.recv(REQUEST_BYTES_MAX).decode("utf-8", "replace").strip()
                req = parse(line)
            except BadRequest as e:
                _send(conn, {"ok": False, "exit": 2, "error": str(e)})
                return
            except OSError:
                conn.close()
                return
            if isinstance(req, (Acquire, Release)):
                if not self._mmp.acquire(blocking=False):
                    _send(conn, {"ok": False, "exit": 1, "error": f"{MMP_REQUESTS_MAX} MMP requests already"
                                                                  " running in this daemon; try again"})
                    return
                mmp = True
            answer = Answer()
            if not self.submit(req, answer):
                _send(conn, {"ok": False, "exit": 1, "error": "the daemon is busy; try again"})
                return
            if not answer.event.wait(answer_wait_s(req)):
                _send(conn, {"ok": False, "exit": 4, "error": "the daemon did not answer in time"})
                return
            _send(conn, answer.value)
        finally:
            if mmp:
                self._mmp.release()
            self._clients.release()


def _send(conn: socket.socket, value: dict) -> None:
    with conn:
        try:
            conn.settimeout(STATUS_TIMEOUT_S)
            conn.sendall(json.dumps(value).encode() + b"\n")
        except OSError:
            pass
