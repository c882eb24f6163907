"""The Linux watchdog device API, as the daemon uses it: open (arms), set the timeout, a keepalive
from the tick, magic close only on a clean stop.

Rules of this file:
- Opening the device arms it: from then on the node is reset unless keepalives keep coming
  (WDIOC_KEEPALIVE) at least every timeout_s. The daemon's loop feeds it from the tick, never
  from a thread of its own: a thread could go on feeding while the tick is stuck, which is
  exactly what the watchdog must catch (sbd and wdmd feed from their main loops too).
- A keepalive is one ioctl on a character device: it does not wait for storage or the network.
- Magic close ('V', then close) disarms it; the daemon does that only on a clean stop. A safety
  stop, a crash or a kill closes without it, and the node is reset after timeout_s: that is the
  self-fence of last resort.
- Every keepalive gap is measured: the margin (timeout - the worst gap seen) is what a stuck
  tick may still take before a reset; status and diskhb_watchdog_margin_seconds show it.
- A device that is not a watchdog (no WDIOC_GETSUPPORT) is refused with one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from diskhb.errors import OperatorError

# linux/watchdog.h: _IOR('W', 0, struct watchdog_info) and friends
WDIOC_GETSUPPORT = 0x80285700
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_KEEPALIVEPING = 0x8000
_INFO = struct.Struct("=II32s")  # struct watchdog_info: options, firmware_version, identity[32]
_INT = struct.Struct("=i")

TIMEOUT_S_MIN = 1
TIMEOUT_S_MAX = 3600
FEED_INTERVALS = 4  # the timeout must cover this many beat intervals (a late tick or two is no reset)


def check_timeout(timeout_s: int, interval_ms: int, where: str = "[watchdog] timeout_s") -> None:
    """One line for a timeout that cannot work with the beat interval (OperatorError)."""
    if not TIMEOUT_S_MIN <= timeout_s <= TIMEOUT_S_MAX:
        raise OperatorError(f"{where} {timeout_s} is not in {TIMEOUT_S_MIN}..{TIMEOUT_S_MAX}")
    need_s = -(-FEED_INTERVALS * interval_ms // 1000)
    if timeout_s < need_s:
        raise OperatorError(f"{where} {timeout_s} is too short for interval_ms {interval_ms}: the tick feeds it"
                            f" once per interval, so it needs at least {FEED_INTERVALS} intervals ({need_s} s)")


class Watchdog:
    def __init__(self, device: str, timeout_s: int, now_ms: int):
        self.device = device
        try:
            self._fd: int | None = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OperatorError(f"watchdog {device}: cannot open: {e.strerror}"
                                + (" (another process holds it: only one may)" if e.errno == errno.EBUSY else ""))
        try:
            info = bytearray(_INFO.size)
            fcntl.ioctl(self._fd, WDIOC_GETSUPPORT, info, True)
        except OSError:
            self.close(clean=False)  # not a watchdog: write nothing into whatever file this is
            raise OperatorError(f"watchdog {device}: not a watchdog device (WDIOC_GETSUPPORT fails);"
                                " [watchdog] device must name one, e.g. /dev/watchdog") from None
        options, _fw, ident = _INFO.unpack(info)
        self.identity = ident.split(b"\0", 1)[0].decode("ascii", "replace") or "?"
        self.magic_close = bool(options & WDIOF_MAGICCLOSE)
        if not options & WDIOF_SETTIMEOUT:
            self.close(clean=True)
            raise OperatorError(f"watchdog {device} ({self.identity}): its timeout cannot be set")
        try:
            buf = bytearray(_INT.pack(timeout_s))
            fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, buf, True)
            got = _INT.unpack(buf)[0]
        except OSError as e:
            self.close(clean=True)
            raise OperatorError(f"watchdog {device}: timeout {timeout_s} s refused: {e.strerror}") from None
        if not 0 < got <= timeout_s:  # a driver may round down, never up: a longer one breaks the timing model
            self.close(clean=True)
            raise OperatorError(f"watchdog {device}: asked for a {timeout_s} s timeout, the device set {got} s")
        self.timeout_s = got
        self.keepalives = 0
        self.errors = 0
        self.last_ms = now_ms  # the open armed it
        self.last_gap_ms = 0
        self.worst_gap_ms = 0

    @property
    def margin_ms(self) -> int:
        return self.timeout_s * 1000 - self.worst_gap_ms

    def keepalive(self, now_ms: int) -> bool:
        """Feed it (from the tick). False if the ioctl failed (counted; the next tick tries again)."""
        if self._fd is None:
            return False
        try:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, bytearray(_INT.size), True)
        except OSError:
            self.errors += 1
            return False
        self.last_gap_ms = now_ms - self.last_ms
        self.worst_gap_ms = max(self.worst_gap_ms, self.last_gap_ms)
        self.last_ms = now_ms
        self.keepalives += 1
        return True

    def close(self, *, clean: bool) -> None:
        """clean: magic close (disarmed). Otherwise it stays armed and resets the node."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if clean:
                os.write(fd, b"V")
        except OSError:
            pass
        finally:
            os.close(fd)

    def status(self) -> dict:
        return {"device": self.device, "identity": self.identity, "timeout_s": self.timeout_s,
                "keepalives": self.keepalives, "errors": self.errors, "last_gap_ms": self.last_gap_ms,
                "worst_gap_ms": self.worst_gap_ms, "margin_s": self.margin_ms / 1000}
