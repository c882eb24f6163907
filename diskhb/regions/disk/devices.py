"""Block devices by what they carry: `path = "uuid:<region uuid>"` and `diskhb scan`.

A region named by its uuid is the same region on every node whatever its /dev name there (sdb
on one node, sdc on the next): the uuid is in its superblock (format.py, @16).

Rules of this file:
- Start-up and command-line only, never on the tick: the daemon resolves a `uuid:` path once,
  before it opens its regions, and keeps the device it found.
- Devices are listed with pyudev (sysfs: it works without udevd); udev's database (by-id
  links, blkid's ID_FS_*) is used where it exists, and `scan` says so when it does not.
- Every device is read on a thread of its own, at most PARALLEL at once, each within a
  deadline and all within a total one. A read stuck in the kernel cannot be cancelled: its
  thread is abandoned (a daemon thread; at most HUNG_MAX, then the scan stops). Reads are
  O_DIRECT: another host may have formatted the device since our page cache last saw it.
- One device carries the uuid: that device. Several: the one stacked above all the others
  (dm-multipath over its paths, kpartx partitions of it over the paths' partitions, md over
  members) by sysfs slaves and partition parents (`choose`); otherwise one error naming them,
  e.g. a cloned LUN: nodes picking different copies would each beat, and each hold an MMP
  resource, on its own copy.
- A device that did not answer (hung, I/O error, not reached before the deadline) could carry
  the uuid too, so resolution refuses rather than guess (`judge`): a stale clone picked over a
  hung original is the two-copies case again. Devices that vanished while we looked, devices
  we may not open (a container's device cgroup: this node can never use them), and the stack of
  the device found (its paths, holders, parent disk) do not count.
- The device found is used by its kernel name (it cannot change while the device exists); its
  /dev/disk/by-id name, when udev made one, is what logs and messages show beside it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import re
import stat
import struct
import threading
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from diskhb.errors import OperatorError
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import BLKGETSIZE64, BLKSSZGET, AlignedBuffer, BlockDevice
from diskhb.runtime import monotonic_ms

UUID_PREFIX = "uuid:"
DEVICES_MAX = 16384  # block devices looked at (a big SAN host: 4000 LUNs x 4 paths, with room)
HEAD_BYTES = 4096  # the diskhb superblock (0..512) and the ext superblock (1024..2048)
PARALLEL = 8  # devices read at once
PROBE_TIMEOUT_MS = 5_000  # one device's reads; a healthy device answers in milliseconds
TOTAL_TIMEOUT_MS = 30_000  # the whole resolution (a start-up must not wait forever either)
SCAN_PROBE_TIMEOUT_MS = 10_000  # scan reads up to ~2 MiB per device (signature probes)
SCAN_TOTAL_TIMEOUT_MS = 60_000
HUNG_MAX = 32  # abandoned threads (devices stuck in the kernel) before we stop reading more
LINK_DIRS = ("/dev/disk/by-id", "/dev/disk/by-path")  # stable names, best first
LINKS_MAX = 65536  # directory entries looked at in LINK_DIRS
SYSFS_LIST_MAX = 1024  # entries of one slaves/ or holders/ directory
STACK_DEPTH_MAX = 16  # dm over dm over md over ...: deeper than any real stack
NAMES_SHOWN = 4  # devices named in one error line before "and N more"
MOUNTINFO_LINES_MAX = 100_000
UDEV_DATA = "/run/udev/data"
# Whole-disk majors that never carry a shared region and may stall a read (spin-up, tray).
SKIP_MAJORS = {2: "floppy", 11: "CD/DVD"}
# by-id names that identify the LUN itself come first (a multipath device's wwn- link moves to it).
_LINK_RANK = ("wwn-", "dm-uuid-mpath-", "nvme-eui.", "nvme-uuid.", "scsi-3", "dm-uuid-", "dm-name-")
_GONE = {errno.ENOENT, errno.ENXIO, errno.ENODEV, errno.ENOMEDIUM}
# Refused to us (a container's device cgroup, no read permission): never usable by this node,
# so not a copy it could pick either; reported, not waited for.
_DENIED = {errno.EACCES, errno.EPERM}
_HEX_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def parse_uuid_spec(path: str) -> str | None:
    """The canonical uuid of a `uuid:<uuid>` path, None for any other path; ValueError if malformed."""
    if not path.startswith(UUID_PREFIX):
        return None
    text = path[len(UUID_PREFIX):].strip()
    if not _HEX_UUID.match(text):
        raise ValueError(f"{path!r} is not uuid:<region uuid>")
    return str(uuidlib.UUID(text))


# -- what sysfs and udev say ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockInfo:
    sys_name: str  # "sdb", "sdb1", "dm-0", "loop3" ("cciss!c0d0": sysfs spells / as !)
    devnode: str  # "/dev/sdb"
    devnum: int  # st_rdev
    size_bytes: int
    partition_of: str | None = None  # a partition's whole disk (sys name)
    slaves: tuple[str, ...] = ()  # what it is stacked on (dm, md)
    holders: tuple[str, ...] = ()  # what is stacked on it
    dm_uuid: str = ""  # device-mapper: "mpath-3600...", "part1-mpath-...", "LVM-..."
    dm_name: str = ""
    suspended: bool = False  # a suspended dm device blocks every read until it is resumed
    links: tuple[str, ...] = ()  # /dev/disk/by-id/... then by-path/..., best first, each checked
    udev: dict[str, str] | None = None  # ID_FS_TYPE etc. from udev's database; None: it has none
    read_only: bool = False

    @property
    def by_id(self) -> tuple[str, ...]:
        return tuple(p for p in self.links if p.startswith(LINK_DIRS[0] + "/"))

    @property
    def label(self) -> str:
        """How a device is named in messages: '/dev/sdb' or '/dev/disk/by-id/wwn-... (/dev/sdb)'."""
        return f"{self.links[0]} ({self.devnode})" if self.links else self.devnode

    @property
    def multipath(self) -> bool:
        return self.dm_uuid.startswith("mpath-") or bool(re.match(r"^part\d+-mpath-", self.dm_uuid))


@dataclass(frozen=True, slots=True)
class Inventory:
    devices: tuple[BlockInfo, ...]
    skipped: tuple[tuple[str, str], ...]  # (device, why not read): empty, floppy, ...
    udev: bool  # udev's database is there (by-id links and blkid's results come from it)
    truncated: bool  # more than DEVICES_MAX: the rest were not looked at

    def by_name(self) -> dict[str, BlockInfo]:
        return {d.sys_name: d for d in self.devices}


def _sysfs_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read(4096).strip()
    except OSError:
        return ""


def _sysfs_list(path: str) -> tuple[str, ...]:
    try:
        with os.scandir(path) as it:
            names = []
            for e in it:
                names.append(e.name)
                if len(names) >= SYSFS_LIST_MAX:
                    break
            return tuple(sorted(names))
    except OSError:
        return ()


def _link_rank(path: str) -> tuple:
    d, name = os.path.split(path)
    where = LINK_DIRS.index(d) if d in LINK_DIRS else len(LINK_DIRS)
    rank = next((i for i, p in enumerate(_LINK_RANK) if name.startswith(p)), len(_LINK_RANK))
    return where, rank, name


def link_index(dirs: Iterable[str] = LINK_DIRS, limit: int = LINKS_MAX) -> dict[int, list[str]]:
    """devnum -> the symlinks in `dirs` that lead to it (read from /dev, so it also works where
    udev made the links but its database is not visible, e.g. in a container)."""
    out: dict[int, list[str]] = {}
    seen = 0
    for d in dirs:
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                seen += 1
                if seen > limit:
                    return out
                try:
                    st = os.stat(e.path)
                except OSError:
                    continue  # a dangling link: its device is gone
                if stat.S_ISBLK(st.st_mode):
                    out.setdefault(st.st_rdev, []).append(e.path)
    return out


def _links_for(devnum: int, udev_links: Iterable[str], index: dict[int, list[str]],
               dirs: tuple[str, ...] = LINK_DIRS) -> tuple[str, ...]:
    found = set(index.get(devnum, ()))
    for p in udev_links:  # udev's record may be stale: keep only links that lead to this device
        if os.path.dirname(p) in dirs and p not in found:
            try:
                if os.stat(p).st_rdev == devnum:
                    found.add(p)
            except OSError:
                pass
    return tuple(sorted(found, key=_link_rank))


def list_block_devices(limit: int = DEVICES_MAX) -> Inventory:
    """Every block device that could carry a region (pyudev over sysfs); OperatorError if pyudev
    or libudev is missing."""
    try:
        import pyudev

        context = pyudev.Context()
    except (ImportError, OSError) as e:
        raise OperatorError(f"cannot list block devices ({e}); install pyudev and libudev1") from None
    udev_ok = os.path.isdir(UDEV_DATA)
    index = link_index()
    devices: list[BlockInfo] = []
    skipped: list[tuple[str, str]] = []
    truncated = False
    for d in context.list_devices(subsystem="block"):
        if len(devices) + len(skipped) >= limit:
            truncated = True
            break
        try:
            info = _block_info(d, udev_ok, index)
        except (OSError, ValueError, KeyError, pyudev.DeviceNotFoundError):
            continue  # it vanished while we looked
        if info is None:
            continue
        why = _not_a_candidate(info)
        if why:
            skipped.append((info.devnode, why))
        else:
            devices.append(info)
    return Inventory(tuple(devices), tuple(skipped), udev_ok, truncated)


def _block_info(d: Any, udev_ok: bool, index: dict[int, list[str]]) -> BlockInfo | None:
    sys_path, sys_name = d.sys_path, d.sys_name
    devnum = d.device_number
    if not devnum:
        return None
    node = d.device_node or "/dev/" + sys_name.replace("!", "/")
    try:
        size = int(_sysfs_text(os.path.join(sys_path, "size")) or 0) * 512  # always 512-byte units
    except ValueError:
        size = 0
    part = os.path.basename(os.path.dirname(sys_path)) if d.device_type == "partition" else None
    udev = None
    if udev_ok and d.is_initialized:
        props = d.properties
        udev = {k: props.get(k) for k in ("ID_FS_TYPE", "ID_FS_UUID", "ID_FS_LABEL", "ID_FS_USAGE",
                                           "ID_PART_TABLE_TYPE", "ID_SERIAL", "ID_WWN") if props.get(k)}
    return BlockInfo(
        sys_name=sys_name, devnode=node, devnum=devnum, size_bytes=size, partition_of=part,
        slaves=_sysfs_list(os.path.join(sys_path, "slaves")),
        holders=_sysfs_list(os.path.join(sys_path, "holders")),
        dm_uuid=_sysfs_text(os.path.join(sys_path, "dm", "uuid")),
        dm_name=_sysfs_text(os.path.join(sys_path, "dm", "name")),
        suspended=_sysfs_text(os.path.join(sys_path, "dm", "suspended")) == "1",
        links=_links_for(devnum, d.device_links if udev_ok else (), index), udev=udev,
        read_only=_sysfs_text(os.path.join(sys_path, "ro")) == "1",
    )


def _not_a_candidate(info: BlockInfo) -> str | None:
    if info.size_bytes < HEAD_BYTES:
        return "empty" if info.size_bytes == 0 else f"{info.size_bytes} bytes, too small"
    kind = SKIP_MAJORS.get(os.major(info.devnum))
    if kind:
        return f"{kind} drive"
    return None


# -- reading many devices, each within a deadline ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # "ok" | "error" | "gone" | "denied" | "timeout" | "not read"
    value: Any = None  # ok: fn's result; error/gone: the reason (one line)


def run_bounded(items: list, fn: Callable[[Any], Any], *, parallel: int = PARALLEL,
                item_timeout_ms: int = PROBE_TIMEOUT_MS, total_timeout_ms: int = TOTAL_TIMEOUT_MS,
                hung_max: int = HUNG_MAX, clock_ms: Callable[[], int] = monotonic_ms) -> list[Outcome]:
    """fn(item) for every item on daemon threads, at most `parallel` at once; one Outcome each,
    in order. An item still running after item_timeout_ms (or at the total deadline) is
    abandoned as "timeout"; after hung_max of those, or at the deadline, the rest are "not read".
    fn raising OSError with a vanished-device errno gives "gone", with EACCES/EPERM "denied", any
    other exception "error"."""
    results: list[Outcome | None] = [None] * len(items)
    answers: queue.SimpleQueue = queue.SimpleQueue()
    active: dict[int, int] = {}  # item index -> start (ms)
    nxt = hung = 0
    deadline = clock_ms() + total_timeout_ms

    def job(i: int) -> None:
        try:
            out = Outcome("ok", fn(items[i]))
        except OSError as e:
            state = "gone" if e.errno in _GONE else "denied" if e.errno in _DENIED else "error"
            out = Outcome(state, e.strerror or str(e))
        except OperatorError as e:
            out = Outcome("error", str(e))
        except Exception as e:  # noqa: BLE001 - a bug must show as this device's failure, not kill the scan
            out = Outcome("error", f"internal error: {e!r}")
        answers.put((i, out))

    while True:
        now = clock_ms()
        while nxt < len(items) and len(active) < parallel and hung < hung_max and now < deadline:
            active[nxt] = now
            threading.Thread(target=job, args=(nxt,), name=f"probe:{nxt}", daemon=True).start()
            nxt += 1
        if not active:
            break
        wait_ms = min(min(active.values()) + item_timeout_ms, deadline) - now
        got: list = []
        try:
            got.append(answers.get(timeout=max(wait_ms, 0) / 1000))
            while True:  # every answer in before judging lateness (after a freeze, all are late)
                got.append(answers.get_nowait())
        except queue.Empty:
            pass
        for i, out in got:
            if i in active:  # an abandoned thread's late answer is ignored
                del active[i]
                results[i] = out
        now = clock_ms()
        for i, t0 in list(active.items()):
            if now - t0 >= item_timeout_ms or now >= deadline:
                del active[i]
                results[i] = Outcome("timeout", f"no answer within {min(now - t0, item_timeout_ms) / 1000:g} s")
                hung += 1
    return [r if r is not None else Outcome("not read", "not read: the scan's time or hung-device budget"
                                                         " ran out") for r in results]


def open_checked(info: BlockInfo) -> BlockDevice:
    """Open a listed device read-only for direct I/O, making sure its /dev node is still the
    device sysfs listed (a stale /dev, or a number reused since, must not be read instead)."""
    if info.suspended:
        raise OperatorError("a suspended device-mapper device (a read would wait for its resume)")
    fd = os.open(info.devnode, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != info.devnum:
            raise OperatorError(f"{info.devnode} is not block device {os.major(info.devnum)}:"
                                f"{os.minor(info.devnum)} (a stale /dev?)")
        buf = bytearray(8)
        fcntl.ioctl(fd, BLKGETSIZE64, buf)  # ioctls ask sizes, nothing else
        size = struct.unpack("<Q", buf)[0]
        ssz = struct.unpack("<i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
        return BlockDevice(info.devnode, fd, ssz, size, True, writable=False, logical_sector_size=ssz)
    except BaseException:
        os.close(fd)
        raise


def read_head(dev: BlockDevice) -> bytes:
    """The first HEAD_BYTES (or one logical sector, if larger); shorter only on a tiny device."""
    length = max(HEAD_BYTES, dev.sector_size)
    length = min(length, dev.size_bytes - dev.size_bytes % dev.sector_size)
    if length <= 0:
        return b""
    buf = AlignedBuffer(length)
    dev.read_into(buf, 0, length)
    return buf.view[:length].tobytes()


def _region_at_start(head: bytes) -> tuple[bytes | None, str | None, bytes]:
    """(uuid of a valid diskhb superblock or None, why a superblock with our magic is not valid,
    the uuid bytes a damaged one holds)."""
    if head[:8] != fmt.SUPERBLOCK_MAGIC:
        return None, None, b""
    try:
        sb = fmt.decode_superblock(head[:fmt.STRUCT_BYTES])
    except fmt.FormatError as e:
        return None, str(e), head[16:32]
    return sb.uuid, None, sb.uuid


def _probe_region(info: BlockInfo) -> tuple[bytes | None, str | None, bytes]:
    with open_checked(info) as dev:
        return _region_at_start(read_head(dev))


# -- resolution ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    spec: str  # "uuid:..." as configured (canonical)
    uuid: str
    device: BlockInfo
    scanned: int  # devices read
    how: str  # "the only device carrying it" / "multipath device over sdb, sdc"

    @property
    def path(self) -> str:
        """What to open: the kernel's name. It cannot change while the device exists, while udev
        may briefly remove and re-add a by-id link on a change event; logs name the link too."""
        return self.device.devnode

    def describe(self) -> str:
        return f"{self.spec} is {self.device.label}: {self.how} among {self.scanned} block devices"


def _names(infos: list, limit: int = NAMES_SHOWN) -> str:
    shown = [i.label if isinstance(i, BlockInfo) else str(i) for i in infos[:limit]]
    more = len(infos) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _down(name: str, by_name: dict[str, BlockInfo]) -> set[str]:
    """Everything `name` is built on: its slaves and a partition's disk, transitively."""
    out: set[str] = set()
    todo = [(name, 0)]
    while todo:
        n, depth = todo.pop()
        info = by_name.get(n)
        if info is None or depth >= STACK_DEPTH_MAX:
            continue
        for m in info.slaves + ((info.partition_of,) if info.partition_of else ()):
            if m not in out:
                out.add(m)
                todo.append((m, depth + 1))
    return out


def _up(name: str, by_name: dict[str, BlockInfo]) -> set[str]:
    """Everything stacked on `name` (holders), transitively."""
    out: set[str] = set()
    todo = [(name, 0)]
    while todo:
        n, depth = todo.pop()
        info = by_name.get(n)
        if info is None or depth >= STACK_DEPTH_MAX:
            continue
        for m in info.holders:
            if m not in out:
                out.add(m)
                todo.append((m, depth + 1))
    return out


def _base(name: str, by_name: dict[str, BlockInfo], depth: int = 0) -> frozenset[str]:
    """The whole disks under `name`: a dm/md device's slaves' disks, a partition's disk."""
    info = by_name.get(name)
    if info is None or depth >= STACK_DEPTH_MAX:
        return frozenset({name})
    if info.slaves:
        return frozenset().union(*(_base(s, by_name, depth + 1) for s in info.slaves))
    if info.partition_of:
        return _base(info.partition_of, by_name, depth + 1)
    return frozenset({name})


def choose(matches: list[BlockInfo], by_name: dict[str, BlockInfo]) -> BlockInfo | None:
    """The one device to use among those carrying the same region, or None when that is not
    clear. Several carry it when one is stacked over the others, e.g. dm-multipath over its
    paths sdb and sdc (all three read the same sectors), kpartx's partition of it over sdb1 and
    sdc1, or md RAID1 (metadata at the end) over its members: then the top one, which holds the
    others (writing a path or a member directly would bypass it). The top one has slaves, and
    every other match lies on its disks below it: a device it is built on, or a plain disk or
    partition there (never another stacked device beside it, nor one above it)."""
    if len(matches) == 1:
        return matches[0]

    def below(n: BlockInfo, t: BlockInfo, disks: frozenset[str], down: set[str]) -> bool:
        return (_base(n.sys_name, by_name) <= disks and t.sys_name not in _down(n.sys_name, by_name)
                and (n.sys_name in down or n.partition_of is not None or not n.slaves))

    tops = []
    for t in matches:
        if t.slaves:
            disks, down = _base(t.sys_name, by_name), _down(t.sys_name, by_name)
            if all(n is t or below(n, t, disks, down) for n in matches):
                tops.append(t)
    return tops[0] if len(tops) == 1 else None


def _in_stack(top: BlockInfo, other: BlockInfo, by_name: dict[str, BlockInfo]) -> bool:
    """Is `other` part of the stack `top` belongs to (a path, a member, a holder, its disk)? A
    device there carries nothing of its own that could be another copy of the region."""
    name = other.sys_name
    if other.partition_of == top.sys_name or name in _down(top.sys_name, by_name) | _up(top.sys_name, by_name):
        return True
    return bool(top.slaves) and _base(name, by_name) <= _base(top.sys_name, by_name)


def _same_lun(infos: list[BlockInfo]) -> str | None:
    """The WWN or serial shared by every device (udev's), if they are paths to one LUN."""
    for key in ("ID_WWN", "ID_SERIAL"):
        values = {(i.udev or {}).get(key) for i in infos}
        if len(values) == 1 and None not in values:
            return f"{key[3:].lower()} {values.pop()}"
    return None


def judge(uuid: str, inv: Inventory, outcomes: list[Outcome]) -> Resolved:
    """The device carrying region `uuid` from every device's probe outcome, or one OperatorError
    line: none carries it, several do (and none is stacked over the rest), or some device that
    could carry it did not answer."""
    spec, want = UUID_PREFIX + uuid, uuidlib.UUID(uuid).bytes
    matches: list[BlockInfo] = []
    silent: list[tuple[BlockInfo, str]] = []  # could carry it: no answer, or a damaged superblock of it
    for info, out in zip(inv.devices, outcomes):
        if out.state == "ok":
            found, damaged, raw = out.value
            if found == want:
                matches.append(info)
            elif damaged and raw == want:
                silent.append((info, f"a damaged superblock with this uuid ({damaged})"))
        elif out.state not in ("gone", "denied"):
            silent.append((info, out.value))
    n = len(inv.devices)
    denied = sum(o.state == "denied" for o in outcomes)
    scanned = f"{n} block device{'s' if n != 1 else ''} scanned" + (f", {denied} not permitted to us" if denied else "")
    if inv.truncated:
        raise OperatorError(f"{spec}: more than {DEVICES_MAX} block devices, the rest were not read; name the"
                            " region's device by its path")
    by_name = inv.by_name()
    if not matches:
        if silent:
            raise OperatorError(f"{spec}: no block device that answered carries this region ({scanned}), and"
                                f" {_names([s[0] for s in silent])} did not ({silent[0][1]}); fix or detach"
                                " them, or name the device by its path")
        raise OperatorError(f"{spec}: no block device carries this region ({scanned}); is its device attached"
                            " to this node? ('diskhb scan' lists the regions this node sees)")
    top = choose(matches, by_name)
    if top is None:
        lun = _same_lun(matches)
        fix = (f"they look like paths to one LUN ({lun}): set up dm-multipath, and {spec} resolves to its device"
               if lun else "two copies of one region (a cloned LUN or image?): detach or reformat the stale one,"
               " or name the device by its path")
        raise OperatorError(f"{spec}: {len(matches)} block devices carry this region: {_names(matches)}; {fix}")
    blocking = [(i, why) for i, why in silent if not _in_stack(top, i, by_name)]
    if blocking:
        raise OperatorError(f"{spec}: found on {top.label}, but {_names([b[0] for b in blocking])} did not answer"
                            f" ({blocking[0][1]}) and could carry it too; fix or detach them, or name the device"
                            " by its path")
    if len(matches) == 1:
        how = "the only device carrying it"
    else:
        kind = "multipath device" if top.multipath else "device"
        how = f"{kind} over {', '.join(m.devnode for m in matches if m is not top)}"
    return Resolved(spec, uuid, top, n, how)


def resolve_paths(paths: Iterable[str], *, item_timeout_ms: int = PROBE_TIMEOUT_MS,
                  total_timeout_ms: int = TOTAL_TIMEOUT_MS) -> dict[str, Resolved]:
    """{path: Resolved} for every `uuid:` path among `paths` (one scan for all of them); other
    paths are not looked at. One OperatorError line on any problem."""
    specs: dict[str, str] = {}
    for p in paths:
        try:
            u = parse_uuid_spec(p)
        except ValueError as e:
            raise OperatorError(f"{e}; use the uuid 'diskhb format' printed ('diskhb scan' lists them)") from None
        if u is not None:
            specs[p] = u
    if not specs:
        return {}
    inv = list_block_devices()
    outcomes = run_bounded(list(inv.devices), _probe_region, item_timeout_ms=item_timeout_ms,
                           total_timeout_ms=total_timeout_ms)
    return {p: judge(u, inv, outcomes) for p, u in specs.items()}


def resolve_path(path: str) -> str:
    """`path` itself, or for `uuid:<uuid>` the device carrying that region (commands that take a
    region path)."""
    r = resolve_paths([path]).get(path)
    return r.path if r else path


# -- diskhb scan ---------------------------------------------------------------------------------


def _mounts() -> dict[int, list[str]]:
    """devnum -> mount points on this host (/proc/self/mountinfo)."""
    out: dict[int, list[str]] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for k, line in enumerate(f):
                if k >= MOUNTINFO_LINES_MAX:
                    break
                fields = line.split()
                if len(fields) < 5 or ":" not in fields[2]:
                    continue
                major, minor = fields[2].split(":", 1)
                mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                out.setdefault(os.makedev(int(major), int(minor)), []).append(mnt)
    except (OSError, ValueError):
        pass
    return out


def _reader(dev: BlockDevice) -> Callable[[int, int], bytes]:
    """read_at(offset, length) over aligned direct reads (the signature probes' interface)."""
    from diskhb.regions.disk.signatures import READ_BYTES_MAX

    s, size = dev.sector_size, dev.size_bytes
    buf = AlignedBuffer(READ_BYTES_MAX + 2 * s)

    def read_at(offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= size:
            return b""
        length = min(length, size - offset, READ_BYTES_MAX)
        start = offset - offset % s
        end = min(-(-(offset + length) // s) * s, size - size % s)
        if end <= start:
            return b""
        dev.read_into(buf, start, end - start)
        return buf.view[offset - start: offset - start + length].tobytes()

    return read_at


def _diskhb_entry(head: bytes) -> dict:
    try:
        sb = fmt.decode_superblock(head[:fmt.STRUCT_BYTES])
    except fmt.FormatError as e:
        return {"kind": "diskhb", "uuid": None, "damaged": str(e)}
    return {"kind": "diskhb", "uuid": sb.uuid_str, "cluster": sb.cluster, "slots": sb.slot_count,
            "sector_size": sb.sector_size, "interval_ms": sb.interval_ms, "dead_ms": sb.dead_ms,
            "io_timeout_ms": sb.io_timeout_ms, "watchdog_ms": sb.watchdog_ms, "mmp_resources": sb.mmp_resources,
            "region_bytes": sb.region_bytes}


def _json_int(v: int) -> int | str:
    """Read from disk, so possibly any u64: beyond 2**53 JSON readers (jq, JavaScript) round it."""
    return v if v < 2**53 else str(v)


def _ext_mmp_entry(head: bytes, read_at: Callable[[int, int], bytes]) -> dict | None:
    """An ext2/3/4 filesystem with MMP: where its MMP block is and what one read of it says
    (a running seq cannot tell a live mount from a stale one without watching it)."""
    from diskhb.mmp import ext4

    try:
        sb = ext4.parse_super(head[ext4.SUPERBLOCK_OFFSET: ext4.SUPERBLOCK_OFFSET + ext4.SUPERBLOCK_BYTES])
    except ext4.Ext4Error:
        return None
    if not sb.has_mmp:
        return None
    label = head[ext4.SUPERBLOCK_OFFSET + 0x78: ext4.SUPERBLOCK_OFFSET + 0x88].split(b"\0", 1)[0]
    out: dict[str, Any] = {"kind": "ext4-mmp", "fs_uuid": str(uuidlib.UUID(bytes=sb.uuid)),
                           "label": label.decode("utf-8", "replace")[:64], "mmp_block": _json_int(sb.mmp_block),
                           "mmp_interval_s": sb.mmp_update_interval_s, "block_size": sb.block_size}
    try:
        offset, length = ext4.mmp_location(sb)
        mmp = ext4.parse_mmp(read_at(offset, length), sb)
    except ext4.Ext4Error as e:
        out.update(state="unreadable", error=str(e))
        return out
    out.update(state=mmp.state, seq=mmp.seq, last_node=mmp.nodename[:64], last_device=mmp.bdevname[:32],
               last_update_s=_json_int(mmp.time_s), check_interval_s=mmp.check_interval_s, checksum_ok=mmp.checksum_ok)
    return out


def _scan_one(info: BlockInfo) -> tuple[dict | None, tuple]:
    """(what the device carries or None, its _region_at_start result for uuid verdicts)."""
    with open_checked(info) as dev:
        head = read_head(dev)
        region = _region_at_start(head)
        if head[:8] == fmt.SUPERBLOCK_MAGIC:
            return _diskhb_entry(head), region
        read_at = _reader(dev)
        ext = _ext_mmp_entry(head, read_at)
        if ext is not None:
            return ext, region
        udev = info.udev or {}
        if udev.get("ID_FS_TYPE") or udev.get("ID_PART_TABLE_TYPE"):  # blkid knows more formats than we do
            parts = [udev.get("ID_FS_TYPE") or f"{udev['ID_PART_TABLE_TYPE']} partition table"]
            parts += [f"{k[6:]}={udev[k]}" for k in ("ID_FS_UUID", "ID_FS_LABEL") if udev.get(k)]
            return {"kind": "other", "source": "udev", "signatures": [" ".join(parts)]}, region
        from diskhb.regions.disk.signatures import find_signatures

        sigs = find_signatures(read_at, dev.size_bytes)
        if sigs:
            return {"kind": "other", "source": "probe", "signatures": [s.description for s in sigs]}, region
        return None, region


def scan(*, item_timeout_ms: int = SCAN_PROBE_TIMEOUT_MS, total_timeout_ms: int = SCAN_TOTAL_TIMEOUT_MS) -> dict:
    """Every block device with a signature, as JSON-ready dicts (no integer above 2**53), plus
    what was not read and why; `uuid` verdicts say where each region's `uuid:` path resolves."""
    t0 = monotonic_ms()
    inv = list_block_devices()
    mounts = _mounts()
    outcomes = run_bounded(list(inv.devices), _scan_one, item_timeout_ms=item_timeout_ms,
                           total_timeout_ms=total_timeout_ms)
    rows, unanswered, blank = [], [], 0
    for info, out in zip(inv.devices, outcomes):
        if out.state == "ok" and out.value[0] is None:
            blank += 1
        elif out.state == "ok":
            rows.append({"device": info.devnode, "sys_name": info.sys_name, "size_bytes": info.size_bytes,
                         "by_id": list(info.by_id), "links": list(info.links), "holders": list(info.holders),
                         "slaves": list(info.slaves), "dm_uuid": info.dm_uuid or None, "dm_name": info.dm_name or None,
                         "mounted": mounts.get(info.devnum, [])[:8], "read_only": info.read_only, **out.value[0]})
        elif out.state != "gone":
            unanswered.append({"device": info.devnode, "state": out.state, "reason": out.value})
    # Where would `uuid:` resolve? The same judgement as at start-up, over the same reads.
    region_outcomes = [Outcome(o.state, o.value[1]) if o.state == "ok" else o for o in outcomes]
    verdicts: dict[str, dict] = {}
    for u in sorted({r["uuid"] for r in rows if r["kind"] == "diskhb" and r.get("uuid")}):
        try:
            res = judge(u, inv, region_outcomes)
            verdicts[u] = {"device": res.device.devnode, "path": res.path, "how": res.how}
        except OperatorError as e:
            verdicts[u] = {"device": None, "error": str(e)}
    for r in rows:
        if r["kind"] == "diskhb" and r.get("uuid"):
            r["resolves_to"] = verdicts[r["uuid"]]["device"]
    return {"devices": rows, "scanned": len(inv.devices), "without_signature": blank, "unanswered": unanswered,
            "skipped": [{"device": d, "reason": why} for d, why in inv.skipped], "udev": inv.udev,
            "truncated": inv.truncated, "uuids": verdicts, "elapsed_s": round((monotonic_ms() - t0) / 1000, 3)}


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def describe_entry(r: dict) -> str:
    """One line for a scanned device."""
    if r["kind"] == "diskhb" and r.get("damaged"):
        what = f"diskhb region with a DAMAGED superblock ({r['damaged']})"
    elif r["kind"] == "diskhb":
        what = (f"diskhb region: cluster {r['cluster']!r}, uuid {r['uuid']}, {r['slots']} slots of"
                f" {r['sector_size']} bytes, interval {r['interval_ms']} ms, dead {r['dead_ms']} ms"
                + (f", watchdog {r['watchdog_ms'] // 1000} s" if r["watchdog_ms"] else ""))
        to = r.get("resolves_to")
        what += (" (uuid: this device)" if to == r["device"] else f" (uuid: resolves to {to})" if to
                 else " (uuid: AMBIGUOUS, see below)")
    elif r["kind"] == "ext4-mmp":
        label = f" label {r['label']!r}" if r["label"] else ""
        who = f"{r.get('last_node', '')!r} on {r.get('last_device', '')!r}"
        state = {"clean": f"clean (last written by {who})",
                 "fsck": f"being checked (fsck) by {who}",
                 "in use": f"seq running: mounted by {who}, or a stale mount ('diskhb mmp inspect' watches it)",
                 "unknown": f"unknown MMP seq {r.get('seq', 0):#010x}",
                 "unreadable": f"MMP block unreadable: {r.get('error')}"}[r["state"]]
        what = (f"ext4 with MMP: UUID {r['fs_uuid']}{label}, MMP block {r['mmp_block']}, interval"
                f" {r['mmp_interval_s']} s, {state}")
    else:
        what = ("other (udev): " if r.get("source") == "udev" else "other: ") + "; ".join(r["signatures"])
    extra = [f"by-id: {', '.join(r['by_id']) or 'none'}"]
    if r["holders"]:
        extra.append(f"held by {', '.join(r['holders'][:NAMES_SHOWN])}")
    if r["mounted"]:
        extra.append(f"mounted here at {', '.join(r['mounted'])}")
    return f"{r['device']}  {_size(r['size_bytes'])}  {what}  [{'; '.join(extra)}]"


def describe_summary(report: dict) -> list[str]:
    """Lines for stderr: counts, devices that did not answer, ambiguous uuids, udev's absence."""
    failed = [u for u in report["unanswered"] if u["state"] != "denied"]
    denied = [u for u in report["unanswered"] if u["state"] == "denied"]
    lines = [f"scanned {report['scanned']} block devices in {report['elapsed_s']:.1f} s:"
             f" {len(report['devices'])} with a signature, {report['without_signature']} without,"
             f" {len(failed)} did not answer, {len(denied)} not permitted to us"
             + (f" ({len(report['skipped'])} not read: empty, removable or too small)" if report["skipped"] else "")]
    for u in failed[:16]:
        lines.append(f"did not answer: {u['device']}: {u['reason']}")
    if denied:
        lines.append(f"not permitted: {', '.join(u['device'] for u in denied[:16])}"
                     + (f" and {len(denied) - 16} more" if len(denied) > 16 else "") + f" ({denied[0]['reason']})")
    for v in report["uuids"].values():
        if v.get("error"):
            lines.append(v["error"])
    if report["truncated"]:
        lines.append(f"more than {DEVICES_MAX} block devices: the rest were not read")
    if not report["udev"]:
        by_id = "from /dev/disk/by-id" if os.path.isdir(LINK_DIRS[0]) else "none (no /dev/disk/by-id either)"
        lines.append(f"udev data unavailable (no {UDEV_DATA}): by-id names {by_id}; types from diskhb's own"
                     " probes (diskhb regions, ext2/3/4, XFS, btrfs, swap, LVM, MD, LUKS, ZFS, OCFS2, GFS2,"
                     " partition tables, SBD, sanlock)")
    return lines
