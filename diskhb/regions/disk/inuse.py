"""Is a device in use by this host? Asked before `diskhb format` writes a single byte.

Rules of this file:
- Only /proc and /sys are read, plus one O_EXCL open of the block device itself: never stat()
  a mount point or a swap file (a hung NFS or FUSE mount would hang `diskhb format` with it).
- Devices are matched by major:minor (mountinfo field 3, the sysfs `dev` files) or by their
  kernel name under /dev, never by the path the operator typed: /dev/disk/by-id/..., a
  /dev/mapper symlink and /dev/dm-0 are one device.
- A whole disk is in use when any of its partitions is; a partition when its whole disk is
  claimed (a holder or a mount on the whole disk covers every partition's bytes).
- Every loop over a file or directory has a bound: a host with 100k mounts is slow, not hung.
- Answers are one phrase for a one-line refusal ("mounted at /srv (ext4)"); None: not in use
  as far as this host can tell (another host's use is diskhb's own business, not ours).
"""

from __future__ import annotations

import errno
import os
import re
import stat

SYS_CLASS_BLOCK = "/sys/class/block"
SYS_DEV_BLOCK = "/sys/dev/block"
MOUNTINFO = "/proc/self/mountinfo"
SWAPS = "/proc/swaps"
LINES_MAX = 200_000  # mountinfo/swaps lines read at most
ENTRIES_MAX = 4096  # directory entries (partitions, holders) looked at per device
NAME_CHARS_MAX = 64  # a holder's name shown at most this long


def why_in_use(path: str) -> str | None:
    """What holds `path` on this host, as a phrase for a one-line refusal; None if nothing."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # the open that follows names the problem
    if stat.S_ISREG(st.st_mode):
        # a swap file has no device number; /proc/swaps names it by path
        return _swap_reason({os.path.realpath(path)})
    if not stat.S_ISBLK(st.st_mode):
        return None
    related = _related_devices(st.st_rdev)
    devnums = {devnum: label for label, _name, devnum in related}
    dev_paths = {f"/dev/{name}": label for label, name, _devnum in related}
    return (_mount_reason(devnums, dev_paths) or _swap_reason(set(dev_paths), dev_paths)
            or _holder_reason(related) or _exclusive_reason(path))


def _related_devices(rdev: int) -> list[tuple[str, str, str]]:
    """(label, kernel name, "major:minor") of the device, its partitions and its whole disk.

    label prefixes the reason: "" for the device itself, "partition loop0p1 " and so on.
    """
    own = f"{os.major(rdev)}:{os.minor(rdev)}"
    name = os.path.basename(os.path.realpath(os.path.join(SYS_DEV_BLOCK, own)))
    out = [("", name, own)]
    base = os.path.join(SYS_CLASS_BLOCK, name)
    for entry in _listdir(base):
        if os.path.exists(os.path.join(base, entry, "partition")):
            devnum = _read_line(os.path.join(base, entry, "dev"))
            if devnum:
                out.append((f"partition {entry} ", entry, devnum))
    if os.path.exists(os.path.join(base, "partition")):
        # sysfs puts a partition's directory inside its whole disk's
        whole = os.path.dirname(os.path.realpath(base))
        devnum = _read_line(os.path.join(whole, "dev"))
        if devnum:
            out.append((f"whole disk {os.path.basename(whole)} ", os.path.basename(whole), devnum))
    return out


def _mount_reason(devnums: dict[str, str], dev_paths: dict[str, str]) -> str | None:
    for line in _lines(MOUNTINFO):
        # id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        fields = line.split(" ")
        if len(fields) < 5 or "-" not in fields[5:]:
            continue
        tail = fields[fields.index("-", 5) + 1:]
        fstype, source = (tail + ["?", ""])[:2]
        # btrfs mounts show an anonymous 0:N device number: the source names the device then
        label = devnums.get(fields[2], dev_paths.get(source))
        if label is not None:
            # mountinfo escapes space, tab, newline and backslash as \ooo: kept, so one line stays one
            return f"{label}mounted at {fields[4]} ({fstype})"
    return None


def _swap_reason(names: set[str], labels: dict[str, str] | None = None) -> str | None:
    for n, line in enumerate(_lines(SWAPS)):
        fields = line.split()
        if n == 0 or not fields:
            continue  # header: "Filename Type Size Used Priority"
        name = _unescape(fields[0])
        if name in names:
            label = (labels or {}).get(name, "")
            return f"{label}an active swap area ({fields[0]}; swapoff it first)"
    return None


def _holder_reason(related: list[tuple[str, str, str]]) -> str | None:
    for label, name, _devnum in related:
        holders = _listdir(os.path.join(SYS_CLASS_BLOCK, name, "holders"))
        if holders:
            return f"{label}held by " + ", ".join(_describe_holder(h) for h in sorted(holders))
    return None


def _describe_holder(holder: str) -> str:
    """dm-0 (device-mapper 'vg-data'), md0 (MD RAID), or the bare kernel name (bcache, ...)."""
    base = os.path.join(SYS_CLASS_BLOCK, holder)
    dm_name = _read_line(os.path.join(base, "dm", "name"))
    if dm_name is not None:
        return f"{holder} (device-mapper {_quoted(dm_name)})"
    if os.path.isdir(os.path.join(base, "md")):
        return f"{holder} (MD RAID)"
    return holder


def _exclusive_reason(path: str) -> str | None:
    """Last resort: the kernel knows of claims we cannot see (another mount namespace, a
    lazily unmounted filesystem, a tool holding it with O_EXCL such as mkfs or a cluster manager)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return ("open exclusively by another process (a mount in another namespace, a RAID/LVM/multipath"
                    " stack or a tool such as mkfs)")
        return None  # not ours to report: the real open names it
    os.close(fd)
    return None


def _unescape(text: str) -> str:
    """/proc's octal escapes (\\040 for a space) back to characters, for comparing paths."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _lines(path: str):
    """Lines of a /proc file, at most LINES_MAX; none if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f):
                if n >= LINES_MAX:
                    return
                yield line.rstrip("\n")
    except OSError:
        return


def _listdir(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            out = []
            for entry in it:
                if len(out) >= ENTRIES_MAX:
                    break
                out.append(entry.name)
            return out
    except OSError:
        return []


def _read_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline(4096).strip()
    except OSError:
        return None


def _quoted(text: str) -> str:
    if len(text) > NAME_CHARS_MAX:
        text = text[:NAME_CHARS_MAX] + "..."
    return repr(text)  # repr escapes anything that could break the one-line message
