"""sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET.

The protocol is newline-separated KEY=VALUE assignments (READY=1, STATUS=..., WATCHDOG=1,
STOPPING=1, EXTEND_TIMEOUT_USEC=N) in one AF_UNIX SOCK_DGRAM datagram, sent to the path in
$NOTIFY_SOCKET, or to the abstract name after its '@'. systemd reads it with SO_PASSCRED and,
under NotifyAccess=main, takes it from the main PID only.

Rules of this file:
- Never blocks and never raises into the caller (the daemon's tick): the socket is opened once,
  non-blocking; a send that fails (the manager's queue full, the socket gone) is counted and
  returns False. The first error of each kind is the caller's to log (new_error).
- The environment is read once; from_env() removes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID
  (sd_notify's unset_environment): processes we start (enforcers, loss commands) are not the
  service's main process and must not speak for it.
- Limits: a message at most MESSAGE_MAX bytes (longer is refused, not cut mid-assignment).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import MutableMapping

MESSAGE_MAX = 4096  # far below the socket's limits; our STATUS lines are cut shorter (supervisor)
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, without its terminating NUL
ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
WATCHDOG_USEC_MAX = 3600 * 1_000_000  # an hour: a larger value is a mistake, not a watchdog


def parse_address(value: str) -> str | bytes:
    """$NOTIFY_SOCKET as a socket address: an absolute path, or '@name' for an abstract name.
    ValueError (one line) for anything else (a relative path, vsock: addresses)."""
    if value.startswith("@"):
        name = b"\0" + value[1:].encode()
        if len(name) > SUN_PATH_MAX + 1:
            raise ValueError(f"NOTIFY_SOCKET {value!r}: abstract name longer than {SUN_PATH_MAX} bytes")
        return name
    if not value.startswith("/"):
        raise ValueError(f"NOTIFY_SOCKET {value!r}: neither an absolute path nor '@name' (not supported)")
    if len(value.encode()) > SUN_PATH_MAX:
        raise ValueError(f"NOTIFY_SOCKET {value!r}: path longer than {SUN_PATH_MAX} bytes")
    return value


def watchdog_usec(environ: MutableMapping[str, str], pid: int) -> int | None:
    """systemd's watchdog period for this process (WatchdogSec=), None when there is none: unset,
    0, not a number in range, or $WATCHDOG_PID set and not our pid (meant for another process)."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if 0 < usec <= WATCHDOG_USEC_MAX else None


class Notifier:
    """One non-blocking datagram socket to the service manager. A disabled notifier (no
    $NOTIFY_SOCKET) accepts every call and sends nothing."""

    def __init__(self, address: str | bytes | None):
        self.address = address
        self.sent = 0
        self.errors = 0  # sends that failed (any reason)
        self.last_error: str | None = None
        self._kinds: set[int] = set()  # errnos seen: new_error is True for the first of each
        self.new_error = False  # the last send failed with an errno not seen before
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """From $NOTIFY_SOCKET (ValueError, one line, for an address we cannot use)."""
        environ = os.environ if environ is None else environ
        value = environ.get("NOTIFY_SOCKET")
        if unset:
            for key in ENV_KEYS:
                environ.pop(key, None)
        return cls(parse_address(value) if value else None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send KEY=VALUE assignments as one message; True if the manager's socket took it."""
        self.new_error = False
        if self._sock is None:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        if len(data) > MESSAGE_MAX:
            return self._failed(errno.EMSGSIZE, f"message of {len(data)} bytes > {MESSAGE_MAX}")
        try:
            self._sock.sendto(data, self.address)
        except OSError as e:  # EAGAIN: the manager's queue is full; ENOENT/ECONNREFUSED: it is gone
            return self._failed(e.errno or 0, e.strerror or str(e))
        self.sent += 1
        return True

    def _failed(self, code: int, text: str) -> bool:
        self.errors += 1
        self.last_error = text
        self.new_error = code not in self._kinds
        self._kinds.add(code)
        return False

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
