"""A private tgtd (Debian `tgt`, the user-space iSCSI target) for tests: file-backed LUNs on 127.0.0.1
(or on an address of a private test net: portal_host).

    with Tgt() as tgt:                                   # or start()/stop(); Tgt(portal_host="10.77.40.254")
        url = tgt.add_target("iqn.2024-01.diskhb.test:lun0", size_bytes=8 << 20,
                             initiators=["iqn.2024-01.diskhb.test:node1", ...])   # None: any initiator
        ...                                              # iscsi://127.0.0.1:PORT/IQN/1 (or portal_host)

Rules of this file:
- isolation: its own portal (127.0.0.1, or an address of a private test net of tools.netns --
  10.77.0.0/16, set up by the caller before start() --, and a free port, never 3260; never any
  other address) and its own management socket (TGT_IPC_SOCKET in its work dir, read by tgtd
  and tgtadm alike), so a system tgtd, or a second harness, is never touched;
- always torn down: stop() kills tgtd by its PID (it ignores SIGTERM: its handler is empty) and
  removes the work dir with the backing files; it runs from __exit__ and is twice-safe; tgtd
  also dies with the thread that started it (PR_SET_PDEATHSIG), so a killed test run leaves none;
- bounded: every tgtadm call and the start-up wait have timeouts; a failure is one line (TgtError)
  with the tail of tgtd's log.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

START_TIMEOUT_S = 10.0
TGTADM_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
PORT_TRIES = 3  # a free port may be taken between our probe and tgtd's bind
TARGETS_MAX = 16
LUN_BYTES_MAX = 256 << 20
PR_SET_PDEATHSIG = 1


class TgtError(RuntimeError):
    """tgtd or tgtadm failed: one line."""


def missing() -> str | None:
    """Why this harness cannot run here (for a skip reason), or None."""
    if os.geteuid() != 0:
        return "needs root (tgtd)"
    for tool, pkg in (("tgtd", "tgt"), ("tgtadm", "tgt")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian package {pkg}; `make test` installs it as root)"
    return None


def pr_missing() -> str | None:
    """Why the SCSI-PR tests cannot run here (tgtd, root, or libiscsi missing), or None."""
    why = missing()
    if why:
        return why
    from diskhb.fencing.scsi.iscsi import load_libiscsi
    from diskhb.fencing.scsi.transport import TransportUnavailable

    try:
        load_libiscsi()
    except TransportUnavailable as e:
        return str(e)
    return None


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


TEST_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.77.0.0/16"))  # loopback, tools.netns


def check_portal_host(host: str) -> str:
    """The portal's address: an IPv4 literal on loopback or in the test nets of tools.netns, else TgtError."""
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise TgtError(f"portal host {host!r} is not an IPv4 address") from None
    if not any(addr in net for net in TEST_NETS):
        raise TgtError(f"portal host {host} is neither loopback nor in a test net ({', '.join(map(str, TEST_NETS))})")
    return host


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Tgt:
    def __init__(self, workdir_parent: str | None = None, portal_host: str = "127.0.0.1"):
        self.workdir_parent = workdir_parent
        self.portal_host = check_portal_host(portal_host)
        self.workdir: str | None = None
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._tids: dict[str, int] = {}
        self._next_tid = 1

    # -- life cycle --

    @property
    def _env(self) -> dict:
        return {**os.environ, "TGT_IPC_SOCKET": os.path.join(self.workdir, "ipc")}

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "tgtd.log")

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip())
        except (OSError, TypeError):
            return ""

    def start(self) -> "Tgt":
        why = missing()
        if why:
            raise TgtError(why)
        if self.proc is not None:
            return self
        # short path: the unix socket path must fit sun_path (108 bytes)
        self.workdir = tempfile.mkdtemp(prefix="diskhb-tgt-", dir=self.workdir_parent)
        try:
            for _ in range(PORT_TRIES):
                self.port = _free_port(self.portal_host)
                if self._spawn():
                    return self
            raise TgtError(f"tgtd did not come up on {self.portal_host} in {PORT_TRIES} tries: {self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> bool:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["tgtd", "-f", "--iscsi", f"portal={self.portal}"], env=self._env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, cwd=self.workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False  # e.g. the port was taken: try another
            portals = self._portals()
            if portals is not None:
                if self.portal in portals and self._listening():
                    return True
                if self.portal not in portals:
                    # the port was taken: tgtd stays up on its default wildcard portal (:3260) instead
                    self._kill()
                    return False
            time.sleep(0.05)
        self._kill()
        raise TgtError(f"tgtd did not answer within {START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def _portals(self) -> list[str] | None:
        """The portals tgtd listens on ('127.0.0.1:3261'), None while it does not answer yet."""
        try:
            r = self._tgtadm("--mode", "portal", "--op", "show")
        except TgtError:
            return None
        if r.returncode != 0:
            return None
        return [line.split()[1].rsplit(",", 1)[0] for line in r.stdout.splitlines() if line.startswith("Portal: ")]

    @property
    def portal(self) -> str:
        return f"{self.portal_host}:{self.port}"

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.portal_host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _kill(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # tgtd's SIGTERM handler does nothing
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass  # stuck in the kernel: nothing more a test can do

    def stop(self) -> None:
        """Kill tgtd, remove the work dir and the backing files. Twice-safe."""
        self._kill()
        self._tids.clear()
        if self.workdir is not None and os.environ.get("DISKHB_TGT_KEEP") is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "Tgt":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- tgtadm --

    def _tgtadm(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["tgtadm", "--lld", "iscsi", *args], env=self._env, capture_output=True,
                                  text=True, timeout=TGTADM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise TgtError(f"tgtadm {' '.join(args)}: no answer within {TGTADM_TIMEOUT_S:.0f} s") from None

    def tgtadm(self, *args: str) -> str:
        if self.proc is None:
            raise TgtError("tgtd is not running")
        r = self._tgtadm(*args)
        if r.returncode != 0:
            detail = (r.stderr or r.stdout).strip().replace("\n", " ")
            raise TgtError(f"tgtadm {' '.join(args)}: exit {r.returncode}: {detail}")
        return r.stdout

    def add_target(self, iqn: str, *, size_bytes: int = 8 << 20, initiators: list[str] | None = None) -> str:
        """A target with one LUN (LUN 1) over a new zeroed file; ACL: the given initiator names,
        or any initiator when None. Returns its iscsi:// URL."""
        if iqn in self._tids:
            raise TgtError(f"target {iqn} exists already")
        if len(self._tids) >= TARGETS_MAX:
            raise TgtError(f"at most {TARGETS_MAX} targets at once per harness")
        if not 512 <= size_bytes <= LUN_BYTES_MAX or size_bytes % 512:
            raise TgtError(f"LUN size must be a multiple of 512 in 512..{LUN_BYTES_MAX} bytes")
        tid, self._next_tid = self._next_tid, self._next_tid + 1
        backing = os.path.join(self.workdir, f"lun{tid}.img")
        with open(backing, "wb") as f:
            f.truncate(size_bytes)
        self.tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", iqn)
        self._tids[iqn] = tid
        self.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1",
                    "--backing-store", backing)
        if initiators is None:
            self.tgtadm("--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-address", "ALL")
        for name in initiators or ():
            self.tgtadm("--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-name", name)
        return self.url(iqn)

    def remove_target(self, iqn: str) -> None:
        """Delete the target (its sessions too: --force) and its backing file."""
        tid = self._tids.pop(iqn)
        try:
            self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(tid))
        finally:
            try:
                os.unlink(os.path.join(self.workdir, f"lun{tid}.img"))
            except OSError:
                pass

    def url(self, iqn: str, lun: int = 1) -> str:
        return f"iscsi://{self.portal}/{iqn}/{lun}"

    def backing_file(self, iqn: str) -> str:
        return os.path.join(self.workdir, f"lun{self._tids[iqn]}.img")

    def show(self) -> str:
        return self.tgtadm("--mode", "target", "--op", "show")
