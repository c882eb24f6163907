"""A serial heartbeat region: authenticated frames over a tty (null-modem cable, USB serial).

Rules of this file:
- Frames are netpath.framing (COBS, 0x00 delimiters, CRC-32C) around the same signed packet as
  the network (netpath.wire), so a cable carries exactly what a datagram does, view included
  (cut to what the line can carry in about FRAME_TIME_MS).
- Nothing blocks: the tty is non-blocking; a frame is written as far as the driver takes it and
  the rest on later publishes/polls. While a frame is still draining no new one is queued (a
  slow or stuck line never builds a backlog); its write stays in flight (IoSubmitted without
  IoCompleted), so the core reports our write late after io_timeout_ms.
- A device that disappears (USB unplug, pty closed: POLLHUP/POLLERR, EIO) is a failed I/O
  ("device lost"), and the frame that was draining is a failed write too (its completion is
  reported, so no write stays in flight forever). The device is reopened at the same path with
  backoff from REOPEN_MS_MIN up to reopen_ms_max, on a helper thread (an open can block in a
  driver); neither publish nor poll ever raises or waits for it. The next delimiter resynchronises.
- A missing, unopenable or busy device at start() is an OperatorError. start() claims the device
  on this host (diskhb.runtime.claim_local_name on its real path, kept until stop, across
  reopens; no flock), so two daemons never share a cable.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time

import serial

import threading

from diskhb.core.types import IoCompleted, IoSubmitted
from diskhb.errors import OperatorError
from diskhb.regions.base import OwnBeat
from diskhb.regions.signed import SignedRegion
from diskhb.runtime import claim_local_name, local_name_holder
from netpath import metrics, wire
from netpath.framing import FrameReader, encode_frame
from netpath.keys import KeyRing, load_key_file
from netpath.receiver import Receiver
from netpath.replay import REBOOT_QUIET_MS

log = logging.getLogger("diskhb.serial")

DEFAULT_BAUD = 115200
BAUDS = (9600, 19200, 38400, 57600, 115200, 230400)
FRAME_TIME_MS = 100  # a frame's budget in line time: 192 bytes at 19200 baud, 1152 at 115200
FRAME_BYTES_MIN = 192  # room for the fixed fields, a 64-byte name and a small view
READ_BYTES_MAX = 64 * 1024  # per poll; at 230400 baud a line delivers 23 KB/s
REOPEN_MS_MIN = 100
REOPEN_MS_MAX = 5000
_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


def packet_budget(baud: int) -> int:
    """Bytes a packet may use so one frame takes about FRAME_TIME_MS on the line (10 bits/byte)."""
    return max(FRAME_BYTES_MIN, min(wire.PACKET_BYTES_MAX, baud // 10 * FRAME_TIME_MS // 1000))


class SerialRegion(SignedRegion):
    kind = "serial"

    def __init__(self, name: str, *, cluster: str, node_id: int, device: str,
                 key: str, baud: int = DEFAULT_BAUD, reboot_quiet_ms: int = REBOOT_QUIET_MS,
                 reopen_ms_max: int = REOPEN_MS_MAX):
        if baud not in BAUDS:
            raise OperatorError(f"region {name}: unsupported baud {baud}; use one of {', '.join(map(str, BAUDS))}")
        if not device:
            raise OperatorError(f"region {name}: a serial region needs device = a tty path")
        if not key:
            raise OperatorError(f"region {name}: a serial region needs key = a key file (diskhb keygen PATH)")
        assert reopen_ms_max >= REOPEN_MS_MIN
        self.name = name
        self.cluster = cluster
        self.node_id = node_id
        self.device = device
        self.baud = baud
        self.key_path = key
        self.reboot_quiet_ms = reboot_quiet_ms
        self.reopen_ms_max = reopen_ms_max
        self.budget_bytes = packet_budget(baud)
        self.path = device
        self.keys: KeyRing | None = None
        self.receiver: Receiver | None = None
        self.port: serial.Serial | None = None
        self.lost: str | None = None  # why the device is closed, while it is
        self.reopens_total = 0
        self.sent_total = 0
        self.sent_bytes_total = 0
        self.received_bytes_total = 0
        self.frames_skipped_total = 0  # ticks whose frame was not queued: the previous one still draining
        self._reader = FrameReader()
        self._tx = b""  # the rest of the frame being written
        self._tx_seq: int | None = None  # the beat it carries
        self._tx_len = 0
        self._skipped: OwnBeat | None = None  # the newest beat not queued (a frame was draining)
        self._events: list = []  # our own I/O since the last poll
        self._opener: threading.Thread | None = None  # a reopen in progress (never on the loop)
        self._opened: list = []  # what it got: [port] or [exception]
        self._reopen_at_ms = 0
        self._reopen_wait_ms = REOPEN_MS_MIN
        self._started = False
        self._claim = None  # this host's claim on the device (see start)
        self._sent = metrics.PACKETS_SENT.labels(name)
        self._send_errors = metrics.SEND_ERRORS.labels(name)
        self._reopens = metrics.LINK_REOPENS.labels(name)

    # -- life cycle -------------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        self.keys = load_key_file(self.key_path)
        if not os.path.exists(self.device):
            raise OperatorError(f"serial device {self.device}: does not exist; check the cable/adapter"
                                " and the device path (prefer a /dev/serial/by-id/ name)")
        scope = f"tty {os.path.realpath(self.device)}"
        try:
            self._claim = claim_local_name(scope)
        except OSError as e:
            holder = local_name_holder(scope)
            who = f"process {holder[0]} (uid {holder[1]})" if holder else "another process"
            raise OperatorError(f"serial device {self.device}: cannot open: in use by {who} on this host"
                                f" (lock held: {_reason(e)})") from None
        try:
            self.port = self._open()
        except (OSError, serial.SerialException, ValueError) as e:
            self._release_claim()
            raise OperatorError(f"serial device {self.device}: cannot open: {_reason(e)}") from None
        self.receiver = Receiver(self.name, cluster=self.cluster, node_id=self.node_id, keys=self.keys,
                                 reboot_quiet_ms=self.reboot_quiet_ms)
        self._started = True
        log.info("region %s: serial %s at %d baud, keys %s (signing %d)", self.name, self.device, self.baud,
                 ",".join(map(str, self.keys.ids)), self.keys.signing_id)

    def publish(self, now_ms: int, beat: OwnBeat, wall_ms: int) -> None:
        if not self._started:
            return
        self.receiver.own_generation = beat.generation
        if self.port is None and not self._try_reopen(now_ms):
            self._events.append(IoCompleted(self.name, "write", now_ms, False, f"{self.device}: {self.lost}", beat.seq))
            return
        if self._tx:
            self.frames_skipped_total += 1  # still draining: its write stays in flight
            self._skipped = beat
        else:
            self._queue(now_ms, beat)
        self._flush(now_ms)

    def poll(self, now_ms: int) -> list:
        out, self._events = self._events, []
        if not self._started:
            return out
        if self.port is None:
            self._try_reopen(now_ms)
            out.extend(self._events)
            self._events = []
            return out
        data = self._read(now_ms)
        if data:
            self.received_bytes_total += len(data)
            for item in self._reader.feed(data):  # bounded by READ_BYTES_MAX per poll
                if isinstance(item, str):
                    self.receiver.reject(item, self.device)
                    continue
                got = self.receiver.handle(now_ms, item, self.device)
                if got is not None:
                    out.append(got)
        if self.port is not None and self._tx:
            self._flush(now_ms)
        out.extend(self._events)
        self._events = []
        return out

    def close(self, flush_ms: int = 0) -> None:
        """Close the line; with flush_ms, first let the draining frame and the newest beat not
        yet queued (a LEFT, at a clean stop) go out, waiting at most flush_ms."""
        if self._started and self.port is not None and flush_ms > 0:
            deadline = time.monotonic() + flush_ms / 1000
            frames = [self._tx] if self._tx else []
            if self._skipped is not None:
                frames.append(encode_frame(self._encode(self._skipped)))
            self._tx = b""
            try:
                for frame in frames:
                    rest = frame
                    while rest and time.monotonic() < deadline:
                        try:
                            rest = rest[os.write(self.port.fileno(), rest):]
                        except BlockingIOError:
                            pass
                        if rest:
                            select.select([], [self.port.fileno()], [], max(0.0, min(0.01, deadline - time.monotonic())))
            except OSError:
                pass
        self._close()
        self._release_claim()
        self._started = False  # inert from now on: no reopen, no publish (the claim is released)
        for got in self._opened:  # a reopen that finished but was never picked up
            _close_port(got)
        self._opened.clear()

    def counters(self) -> dict[str, int]:
        return {"read_bytes": self.received_bytes_total, "write_bytes": self.sent_bytes_total}

    # -- internals --------------------------------------------------------------------------

    def _open(self) -> serial.Serial:
        # timeout=0 / write_timeout=0: pyserial never waits; the fd is O_NONBLOCK and we do the I/O.
        return serial.Serial(self.device, self.baud, timeout=0, write_timeout=0)

    def _encode(self, beat: OwnBeat) -> bytes:
        p = wire.Packet(cluster_id=self.receiver.cluster_id, node_id=beat.node_id, generation=beat.generation,
                        seq=beat.seq, mono_ms=beat.mono_ms, flags=beat.flags, name=beat.name, view=beat.view,
                        digest=beat.digest)
        return wire.encode(p, self.keys, budget_bytes=self.budget_bytes)

    def _queue(self, now_ms: int, beat: OwnBeat) -> None:
        self._tx = encode_frame(self._encode(beat))
        self._tx_len, self._tx_seq = len(self._tx), beat.seq
        self._skipped = None
        self._events.append(IoSubmitted(self.name, "write", now_ms, beat.seq))

    def _flush(self, now_ms: int) -> None:
        try:
            n = os.write(self.port.fileno(), self._tx)
        except BlockingIOError:
            return  # the line is busy: the rest goes out on a later publish/poll
        except OSError as e:
            self._lose(now_ms, "write", _reason(e))
            return
        self._tx = self._tx[n:]
        if not self._tx:
            self.sent_total += 1
            self.sent_bytes_total += self._tx_len
            self._sent.inc()
            self._events.append(IoCompleted(self.name, "write", now_ms, True, None, self._tx_seq, now_ms))
            self._tx_seq = None

    def _read(self, now_ms: int) -> bytes:
        fd = self.port.fileno()
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            events = p.poll(0)
            if any(ev & _HANGUP for _, ev in events):
                self._lose(now_ms, "read", "device hung up (unplugged?)")
                return b""
            if not events:
                self._events.append(IoCompleted(self.name, "read", now_ms, True, submitted_ms=now_ms))
                return b""
            data = os.read(fd, READ_BYTES_MAX)
        except BlockingIOError:
            return b""
        except OSError as e:
            self._lose(now_ms, "read", _reason(e))
            return b""
        self._events.append(IoCompleted(self.name, "read", now_ms, True, submitted_ms=now_ms))
        return data

    def _lose(self, now_ms: int, kind: str, why: str) -> None:
        """The device went away: report, close, and schedule the first reopen."""
        if kind == "write":
            self._send_errors.inc()
        self._events.append(IoCompleted(self.name, kind, now_ms, False, f"{self.device}: {why}",
                                        self._tx_seq if kind == "write" else None))
        if self._tx and kind == "read":
            # The frame that was draining will never complete: its write failed too (else it
            # would stay in flight for ever and the core would count it late, then too many).
            self._events.append(IoCompleted(self.name, "write", now_ms, False, f"{self.device}: {why}", self._tx_seq))
        log.error("region %s: serial device %s lost (%s); reopening with backoff up to %d ms",
                  self.name, self.device, why, self.reopen_ms_max)
        self.lost = f"device lost: {why}"
        self._close()
        self._tx, self._tx_seq, self._skipped = b"", None, None
        self._reader.reset()
        self._reopen_wait_ms = REOPEN_MS_MIN
        self._reopen_at_ms = now_ms + REOPEN_MS_MIN

    def _try_reopen(self, now_ms: int) -> bool:
        """Pick up a reopen that finished; start one when its backoff is over. Never blocks: an
        open (and pyserial's termios setup) runs on a helper thread."""
        if self._opener is not None:
            if self._opener.is_alive():
                return False
            self._opener = None
            got = self._opened.pop() if self._opened else RuntimeError("reopen thread ended without a result")
            if isinstance(got, BaseException):
                self.lost = f"device lost, reopen failed: {_reason(got)}"
                self._reopen_wait_ms = min(2 * self._reopen_wait_ms, self.reopen_ms_max)
                self._reopen_at_ms = now_ms + self._reopen_wait_ms
                return False
            self.port = got
            self.lost = None
            self.reopens_total += 1
            self._reopens.inc()
            self._reader.reset()
            log.warning("region %s: serial device %s reopened", self.name, self.device)
            return True
        if now_ms >= self._reopen_at_ms:
            def attempt() -> None:
                try:
                    port = self._open()
                except (OSError, serial.SerialException, ValueError) as e:
                    self._opened.append(e)
                    return
                if not self._started:  # closed while we were blocked in the driver: nobody wants it
                    _close_port(port)
                    return
                self._opened.append(port)

            self._opener = threading.Thread(target=attempt, name=f"reopen:{self.name}", daemon=True)
            self._opener.start()
        return False

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def _close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except Exception:  # noqa: BLE001 - closing a vanished device may fail; it is closed either way
                pass
            self.port = None


def _close_port(port) -> None:
    if isinstance(port, BaseException):
        return
    try:
        port.close()
    except Exception:  # noqa: BLE001 - closing a port we never used
        pass


def _reason(e: BaseException) -> str:
    """A short reason for a serial error (pyserial wraps OSErrors in long messages)."""
    code = getattr(e, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]}: {os.strerror(code)}"
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
