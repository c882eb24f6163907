"""iSCSI transport: raw CDBs to `iscsi://host:port/target-iqn/lun` through libiscsi (ctypes).

libiscsi is the Debian library (package libiscsi7; headers in libiscsi-dev). Only its
asynchronous API is used, driven by our own poll loop:

- I1 BOUNDED (transport T1): libiscsi's *_sync calls loop on poll() until the callback fires, with
  no deadline of their own (iscsi_set_timeout only acts inside iscsi_service, in whole seconds,
  and not on a TCP connect that never completes). So we call iscsi_full_connect_async /
  iscsi_scsi_command_async and then poll the context's fd ourselves until the callback fires
  or our monotonic deadline passes: every call returns within its timeout plus one
  iscsi_service() call (which never blocks: libiscsi's socket is non-blocking). No thread is
  left behind, unlike a sync call on a worker that could only be abandoned.
- I2 AFTER A TIMEOUT the command may still run on the target (outcome unknown): the task is
  cancelled locally and the session torn down; the next call logs in afresh (a new I_T nexus,
  see I4), so no late answer can be mistaken for a later command's.
- I3 OUR CDB BYTES: tasks are made with scsi_create_task from cdb.py's bytes (never libiscsi's own
  PR helpers), so SG_IO and iSCSI send the same commands. On CHECK CONDITION libiscsi keeps the
  raw data segment (a 2-byte SenseLength, then the sense) in task->datain: sense.py decodes it.
- I4 NO SILENT RECONNECT: libiscsi's automatic reconnect is off. Each login is a new I_T nexus
  (a random ISID per context), and a PR registration belongs to the nexus (SPC-4; tgt keys
  it by nexus and creation time), so a reconnect silently loses our registration (the
  fence-agents issue 517 failure). Here a dropped session is a TransportError, and `logins`
  counts logins so a caller sees that it must register again (deliberately).
- I5 IP LITERALS ONLY: libiscsi resolves host names with a blocking getaddrinfo(), which no
  deadline can bound; a fencing path must not depend on DNS during a split anyway.
"""

from __future__ import annotations

import ctypes
import ipaddress
import select
import struct
import threading
import time
import urllib.parse

from diskhb.core.record import record
from diskhb.fencing.scsi.transport import ScsiResult, TransportError, TransportTimeout, TransportUnavailable, \
    check_request, check_timeout, opname

ISCSI_PORT_DEFAULT = 3260
LUN_MAX = 16383  # SAM flat addressing; libiscsi takes an int
ISCSI_NAME_BYTES_MAX = 223  # RFC 3720: iSCSI names
LOGOUT_WAIT_MS = 500  # a clean logout at close, best effort
SERVICE_IDLE_MS = 100  # libiscsi: when which_events() is 0, wait >= 100 ms before asking again

_SESSION_NORMAL = 2
_DIGEST_NONE_CRC32C = 1  # offer none, accept CRC32C (libiscsi's default)
_XFER_NONE, _XFER_READ, _XFER_WRITE = 0, 1, 2
_STATUS_GOOD = 0
_STATUS_CHECK_CONDITION = 2
# libiscsi's own statuses, not the device's (iscsi.h): the command got no answer
_STATUS_CANCELLED, _STATUS_ERROR, _STATUS_TIMEOUT = 0x0F000000, 0x0F000001, 0x0F000002


class IscsiUrlError(ValueError):
    """A URL or initiator name we refuse: one line."""


@record
class IscsiTarget:
    host: str  # an IP literal (I5)
    port: int
    iqn: str
    lun: int

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"iscsi://{self.portal}/{self.iqn}/{self.lun}"


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise IscsiUrlError(f"{what} is empty")
    raw = name.encode("utf-8", "replace")
    if len(raw) > ISCSI_NAME_BYTES_MAX:
        raise IscsiUrlError(f"{what} is {len(raw)} bytes, more than {ISCSI_NAME_BYTES_MAX} (RFC 3720)")
    if not name.startswith(("iqn.", "eui.", "naa.")):
        raise IscsiUrlError(f"{what} {name!r} must start with iqn., eui. or naa. (RFC 3720)")
    if any(not (c.isascii() and (c.isalnum() or c in ".-:")) for c in name):
        raise IscsiUrlError(f"{what} {name!r} has a character outside a-z 0-9 . - :")
    return name


def check_initiator_name(name: str) -> str:
    return _check_name(name, "initiator name")


def parse_url(url: str) -> IscsiTarget:
    """iscsi://HOST[:PORT]/TARGET-IQN/LUN, HOST an IPv4 or [IPv6] literal; the IQN may be
    %-encoded (libiscsi's URL convention: iqn.2024-01.test%3Alun0)."""
    if not isinstance(url, str) or not url.startswith("iscsi://"):
        raise IscsiUrlError(f"not an iscsi:// URL: {url!r}")
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port
    except ValueError as e:
        raise IscsiUrlError(f"bad iscsi URL {url!r}: {e}") from None
    if u.username is not None or u.password is not None:
        raise IscsiUrlError(f"{url}: CHAP credentials in the URL are not supported")
    if u.query or u.fragment:
        raise IscsiUrlError(f"{url}: no query or fragment allowed")
    host = u.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise IscsiUrlError(f"{url}: the host must be an IP address (name resolution cannot be bounded in time)") \
            from None
    parts = u.path.split("/")
    if len(parts) != 3 or parts[0] != "":
        raise IscsiUrlError(f"{url}: expected iscsi://host[:port]/target-iqn/lun")
    iqn = _check_name(urllib.parse.unquote(parts[1]), "target name")
    if not parts[2].isdigit() or int(parts[2]) > LUN_MAX:
        raise IscsiUrlError(f"{url}: LUN must be 0..{LUN_MAX}")
    return IscsiTarget(host, port if port is not None else ISCSI_PORT_DEFAULT, iqn, int(parts[2]))


# -- libiscsi through ctypes --------------------------------------------------------------------------


class _ScsiData(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int), ("data", ctypes.c_void_p)]


class _ScsiTask(ctypes.Structure):
    """struct scsi_task of scsi-lowlevel.h up to `ptr` (checked at load: _check_layout)."""

    _fields_ = [("status", ctypes.c_int), ("cdb_size", ctypes.c_int), ("xfer_dir", ctypes.c_int),
                ("expxferlen", ctypes.c_int), ("cdb", ctypes.c_ubyte * 16), ("residual_status", ctypes.c_int),
                ("residual", ctypes.c_size_t),
                # struct scsi_sense: 16 bytes, int-aligned (its bit fields and the char after them
                # share one unsigned as GCC packs them; ctypes would not). Never read: sense.py
                # decodes the raw sense instead (I3).
                ("sense", ctypes.c_int * 4), ("datain", _ScsiData),
                ("mem", ctypes.c_void_p), ("ptr", ctypes.c_void_p)]


class _IscsiData(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("data", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_LIB_NAMES = ("libiscsi.so.7", "libiscsi.so")
_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _bind(lib: ctypes.CDLL) -> None:
    vp, i, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    sigs = {
        "iscsi_create_context": (vp, [cp]),
        "iscsi_destroy_context": (i, [vp]),
        "iscsi_set_targetname": (i, [vp, cp]),
        "iscsi_set_session_type": (i, [vp, i]),
        "iscsi_set_header_digest": (i, [vp, i]),
        "iscsi_set_noautoreconnect": (None, [vp, i]),
        "iscsi_full_connect_async": (i, [vp, cp, i, _CALLBACK, vp]),
        "iscsi_logout_async": (i, [vp, _CALLBACK, vp]),
        "iscsi_scsi_command_async": (i, [vp, i, vp, _CALLBACK, vp, vp]),
        "iscsi_scsi_cancel_task": (i, [vp, vp]),
        "iscsi_get_fd": (i, [vp]),
        "iscsi_which_events": (i, [vp]),
        "iscsi_service": (i, [vp, i]),
        "iscsi_get_error": (cp, [vp]),
        "scsi_create_task": (vp, [i, ctypes.POINTER(ctypes.c_ubyte), i, i]),
        "scsi_free_scsi_task": (None, [vp]),
        "scsi_set_task_private_ptr": (None, [vp, vp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


def _check_layout(lib: ctypes.CDLL) -> None:
    """Our _ScsiTask must match the library's struct: fields set by libiscsi's own functions
    are read back through it (the prefix through scsi_create_task, `ptr` -- past sense, datain
    and mem -- through scsi_set_task_private_ptr)."""
    cdb = (ctypes.c_ubyte * 16)(*range(0xA0, 0xB0))
    task = lib.scsi_create_task(10, cdb, _XFER_READ, 4321)
    if not task:
        raise TransportUnavailable("libiscsi: scsi_create_task failed (out of memory?)")
    try:
        lib.scsi_set_task_private_ptr(task, 0x5EED1234)
        t = _ScsiTask.from_address(task)
        ok = (t.cdb_size, t.xfer_dir, t.expxferlen, bytes(t.cdb[:10]), t.ptr, t.datain.size, t.datain.data) == \
            (10, _XFER_READ, 4321, bytes(range(0xA0, 0xAA)), 0x5EED1234, 0, None)
    finally:
        lib.scsi_free_scsi_task(task)
    if not ok:
        raise TransportUnavailable("libiscsi: struct scsi_task differs from the layout of scsi-lowlevel.h 1.19")


def load_libiscsi() -> ctypes.CDLL:
    """The library, bound and checked once; TransportUnavailable (one line) when it is missing."""
    global _lib
    with _lib_lock:
        if _lib is None:
            errors = []
            for name in _LIB_NAMES:
                try:
                    lib = ctypes.CDLL(name)
                    break
                except OSError as e:
                    errors.append(str(e))
            else:
                raise TransportUnavailable(f"libiscsi not found (install the Debian package libiscsi7): {errors[0]}")
            try:
                _bind(lib)
            except AttributeError as e:
                raise TransportUnavailable(f"libiscsi lacks a function we need: {e}") from None
            _check_layout(lib)
            _lib = lib
        return _lib


class IscsiTransport:
    """One iSCSI session to one LUN, as one initiator (one node: its own initiator name).

    Not connected until the first execute() or connect(). Thread-safe one command at a time (T4)."""

    def __init__(self, url: str, initiator_name: str):
        self.target = parse_url(url)
        self.initiator = check_initiator_name(initiator_name)
        self.name = self.target.url
        self.logins = 0  # I4: every login is a new I_T nexus without our registration
        self._lib = load_libiscsi()
        self._ctx: int | None = None
        self._lock = threading.Lock()
        self._done = False
        self._status = 0
        self._dropped = False  # the connect callback fired again: the session went down
        self._connecting = False
        # C callbacks must outlive every call that may fire them: kept on the instance
        self._cmd_cb = _CALLBACK(self._on_command)
        self._conn_cb = _CALLBACK(self._on_connect)

    # -- callbacks (run inside iscsi_service, on the calling thread) --

    def _on_command(self, _ctx, status, _data, _private) -> None:
        self._status, self._done = status, True

    def _on_connect(self, _ctx, status, _data, _private) -> None:
        if self._connecting:
            self._status, self._done = status, True
        else:  # libiscsi calls a full connect's callback again when the session is torn down
            self._dropped = True

    # -- the poll loop (I1) --

    def _error(self) -> str:
        if self._ctx is None:
            return "no session"
        raw = self._lib.iscsi_get_error(self._ctx)
        return (raw or b"").decode("utf-8", "replace").replace("\n", " ").strip() or "no detail from libiscsi"

    def _wait(self, deadline: float) -> bool:
        """Serve the session until the pending callback fires (True) or the deadline passes (False)."""
        lib, ctx = self._lib, self._ctx
        poller = select.poll()
        while not self._done:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return False
            fd, events = lib.iscsi_get_fd(ctx), lib.iscsi_which_events(ctx)
            revents = 0
            if fd >= 0 and events:
                poller.register(fd, events)
                try:
                    ready = poller.poll(min(left_ms, 1000))
                finally:
                    poller.unregister(fd)
                revents = ready[0][1] if ready else 0
            else:
                time.sleep(min(left_ms, SERVICE_IDLE_MS) / 1000)
            if lib.iscsi_service(ctx, revents) < 0 and not self._done:
                raise TransportError(f"{self.name}: session failed: {self._error()}", outcome_unknown=True)
        return True

    def _teardown(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            self._lib.iscsi_destroy_context(ctx)  # fires pending callbacks with CANCELLED; ours are alive

    def _connect(self, deadline: float) -> None:
        lib = self._lib
        ctx = lib.iscsi_create_context(self.initiator.encode())
        if not ctx:
            raise TransportError(f"{self.name}: iscsi_create_context failed")
        self._ctx, self._dropped = ctx, False
        lib.iscsi_set_noautoreconnect(ctx, 1)  # I4
        if lib.iscsi_set_targetname(ctx, self.target.iqn.encode()) or \
                lib.iscsi_set_session_type(ctx, _SESSION_NORMAL) or \
                lib.iscsi_set_header_digest(ctx, _DIGEST_NONE_CRC32C):
            msg = self._error()
            self._teardown()
            raise TransportError(f"{self.name}: cannot set up the session: {msg}")
        self._done, self._connecting = False, True
        try:
            if lib.iscsi_full_connect_async(ctx, self.target.portal.encode(), self.target.lun, self._conn_cb, None):
                raise TransportError(f"{self.name}: cannot start a login: {self._error()}")
            if not self._wait(deadline):
                raise TransportTimeout(f"{self.name}: no login within the timeout as {self.initiator}")
            if self._status != _STATUS_GOOD:
                raise TransportError(f"{self.name}: login as {self.initiator} failed: {self._error()}")
        except BaseException:
            self._teardown()
            raise
        finally:
            self._connecting = False
        self.logins += 1

    def connect(self, timeout_ms: int) -> None:
        check_timeout(self.name, timeout_ms)
        deadline = time.monotonic() + timeout_ms / 1000
        if not self._lock.acquire(timeout=timeout_ms / 1000):
            raise TransportTimeout(f"{self.name}: busy with another command for {timeout_ms} ms")
        try:
            if self._ctx is None or self._dropped:
                self._teardown()
                self._connect(deadline)
        finally:
            self._lock.release()

    @property
    def connected(self) -> bool:
        return self._ctx is not None and not self._dropped

    def execute(self, cdb: bytes, data_out: bytes | None, data_in_len: int, timeout_ms: int) -> ScsiResult:
        check_request(self.name, cdb, data_out, data_in_len, timeout_ms)
        deadline = time.monotonic() + timeout_ms / 1000
        what = f"{self.name}: {opname(cdb)}"
        if not self._lock.acquire(timeout=timeout_ms / 1000):
            raise TransportTimeout(f"{what}: transport busy with another command for {timeout_ms} ms")
        try:
            if self._ctx is None or self._dropped:
                self._teardown()
                self._connect(deadline)  # its time counts against this command's
            return self._command(what, cdb, data_out, data_in_len, deadline)
        finally:
            self._lock.release()

    def _command(self, what: str, cdb: bytes, data_out: bytes | None, data_in_len: int,
                 deadline: float) -> ScsiResult:
        lib, ctx = self._lib, self._ctx
        raw_cdb = (ctypes.c_ubyte * len(cdb))(*cdb)
        if data_out is not None:
            direction, xfer_len = _XFER_WRITE, len(data_out)
        else:
            direction, xfer_len = (_XFER_READ if data_in_len else _XFER_NONE), data_in_len
        task = lib.scsi_create_task(len(cdb), raw_cdb, direction, xfer_len)
        if not task:
            raise TransportError(f"{what}: scsi_create_task failed")
        out_buf = ctypes.create_string_buffer(bytes(data_out), len(data_out)) if data_out is not None else None
        out_desc = _IscsiData(len(data_out), ctypes.cast(out_buf, ctypes.c_void_p)) if out_buf is not None else None
        self._done = False
        try:
            if lib.iscsi_scsi_command_async(ctx, self.target.lun, task, self._cmd_cb,
                                            ctypes.byref(out_desc) if out_desc is not None else None, None):
                msg = self._error()
                self._teardown()
                raise TransportError(f"{what}: not sent: {msg}")
            try:
                answered = self._wait(deadline)
            except TransportError:
                lib.iscsi_scsi_cancel_task(ctx, task)
                self._teardown()
                raise
            if not answered:  # I2: cancel locally, drop the session
                lib.iscsi_scsi_cancel_task(ctx, task)
                self._teardown()
                raise TransportTimeout(f"{what}: no answer within the timeout (it may still run on the target)")
            status = self._status
            if status in (_STATUS_CANCELLED, _STATUS_ERROR, _STATUS_TIMEOUT):
                msg = self._error()
                self._teardown()
                raise TransportError(f"{what}: no answer: {msg}", outcome_unknown=True)
            t = _ScsiTask.from_address(task)
            raw = ctypes.string_at(t.datain.data, t.datain.size) if t.datain.data and t.datain.size > 0 else b""
            if status == _STATUS_CHECK_CONDITION:  # I3: SenseLength (2 bytes) then the sense
                n = struct.unpack_from(">H", raw, 0)[0] if len(raw) >= 2 else 0
                return ScsiResult(status, b"", raw[2:2 + n])
            return ScsiResult(status, raw[:data_in_len] if status == _STATUS_GOOD else b"", b"")
        finally:
            lib.scsi_free_scsi_task(task)
            del out_buf  # referenced until the task is freed: libiscsi sends from it

    def close(self) -> None:
        """Log out (best effort, bounded) and drop the session."""
        with self._lock:
            if self._ctx is None:
                return
            if not self._dropped:
                self._done = False
                try:
                    if self._lib.iscsi_logout_async(self._ctx, self._cmd_cb, None) == 0:
                        self._wait(time.monotonic() + LOGOUT_WAIT_MS / 1000)
                except TransportError:
                    pass  # the session is being dropped anyway
            self._teardown()

    def __enter__(self) -> "IscsiTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
