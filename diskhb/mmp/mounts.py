"""The filesystems a guarded command left mounted: what `mmp run` warns about.

`diskhb mmp run RES -- mount DEV DIR` guards nothing: mount(8) returns at once, the guard
releases RES, and the filesystem stays mounted with nobody holding it. A mount is guarded by a
daemon-held resource instead (its `mountpoint` in [[resource]], `diskhb mmp acquire`). So after
a command that exited 0, `mmp run` looks for mounts that its argv names (a block device or a
mount point, also inside a `sh -c` string) which were not there before it ran and still are.

Judged from /proc/self/mountinfo (diskhb.mmp.sentinel.MountTable). Only /dev paths are stat'ed
(to learn a device's major:minor); a mount point is compared as a string: the filesystem on it
may hang.
"""

from __future__ import annotations

import os
import stat

from diskhb.mmp.sentinel import MountTable, norm_path

WORDS_MAX = 256  # argv words looked at: a command line, not a script
_TAGS = {"UUID=": "/dev/disk/by-uuid/", "LABEL=": "/dev/disk/by-label/", "PARTUUID=": "/dev/disk/by-partuuid/",
         "PARTLABEL=": "/dev/disk/by-partlabel/"}
_PUNCT = "'\";&|()<>"


def _words(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        for w in arg.split():
            w = w.strip(_PUNCT)
            if w:
                out.append(w)
    return out[:WORDS_MAX]


def named(argv: list[str], cwd: str | None = None) -> tuple[set[str], set[str]]:
    """(major:minor of the block devices, normalized paths) the command's words name."""
    devices: set[str] = set()
    paths: set[str] = set()
    for w in _words(argv):
        for tag, where in _TAGS.items():
            if w.startswith(tag):
                w = where + w[len(tag):]
        if w.startswith("/dev/"):
            try:
                st = os.stat(w)
            except OSError:
                st = None
            if st is not None and stat.S_ISBLK(st.st_mode):
                devices.add(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
                continue
        if "/" in w or w in (".", ".."):
            paths.add(norm_path(os.path.join(cwd or os.getcwd(), w)))
    return devices, paths


def mounts_named(table: MountTable, devices: set[str], paths: set[str]) -> dict[int, str]:
    """mount id -> mount point, for every mount of a named device or on a named path."""
    return {i: at for i, at in table.at_of_id.items()
            if at != "/" and (at in paths or table.dev_of_id.get(i) in devices)}


def snapshot(argv: list[str]) -> dict[int, str]:
    """The mounts argv names now (before the command runs); {} if mountinfo cannot be read."""
    try:
        return mounts_named(MountTable.read(), *named(argv))
    except OSError:
        return {}


def left_mounted(argv: list[str], before: dict[int, str]) -> list[str]:
    """Mount points of the mounts argv names that appeared while the command ran and are still there."""
    try:
        now = mounts_named(MountTable.read(), *named(argv))
    except OSError:
        return []
    return sorted({at for i, at in now.items() if i not in before})


def warning(resource: str, command: str, left: list[str]) -> str:
    """One line: what is unguarded, and the right way to guard a mount."""
    where = ", ".join(left)
    return (f"diskhb: warning: {where} is still mounted after '{command}' exited, but {resource} was released"
            f" with it: 'mmp run' guards only while its command runs; guard a mount with a daemon-held resource"
            f" (mountpoint = \"{left[0]}\" in its [[resource]], 'diskhb mmp acquire {resource} --config FILE'"
            f" before mounting; see the README)")
