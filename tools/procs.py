"""What the test harnesses (tools/cts, tools/pcmk.py, tools/bench) read of a process from /proc:
its children, whether it still runs, its command line. Never raises: a process that is gone
has no children, does not run and has an empty command line."""

from __future__ import annotations

import os


def children(pid: int) -> list[int]:
    """The children of every thread of `pid` (a forking thread's children are listed under it)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except (OSError, ValueError):
        pass
    return out


def alive(pid: int) -> bool:
    """Running or stopped, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
