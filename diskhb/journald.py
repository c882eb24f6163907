"""Log lines for journald when stderr is the journal; the usual timestamped lines otherwise.

Under systemd with stderr connected to the journal, journald stamps every line itself (time,
pid, unit) and reads a syslog priority from a `<N>` prefix (sd-daemon(3)): our own timestamp
and pid would be printed twice, and without the prefix every line is "info". So there a line is
`<N>LEVEL message`, and every further line of a multi-line record (a traceback) carries the
same prefix, else journald files it as info.

Detection follows systemd.exec(5): $JOURNAL_STREAM is "DEV:INODE" of the journal stream the
service manager connected; it counts only if it is our stderr's device and inode (a process
whose stderr was redirected elsewhere, e.g. to a file by a test or a pipe, keeps the plain
format even if it inherited the variable). $INVOCATION_ID alone is not enough: StandardError=
may point at a file or a tty.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

PLAIN_FORMAT = "%(asctime)s diskhb[%(process)d] %(levelname)s %(message)s"  # tools parse its timestamp

# syslog(3) priorities: LOG_CRIT 2, LOG_ERR 3, LOG_WARNING 4, LOG_INFO 6, LOG_DEBUG 7
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the standard ones round down)."""
    for level, prio in _PRIORITIES:
        if levelno >= level:
            return prio
    return 7


def stderr_is_journal(environ: Mapping[str, str], fd: int = 2) -> bool:
    """True if $JOURNAL_STREAM names the file open on fd (our stderr)."""
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        want = (int(dev), int(ino))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == want


class JournalFormatter(logging.Formatter):
    """`<N>LEVEL message`, no time or pid (journald adds them), the prefix on every line."""

    def __init__(self):
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix)


def formatter(environ: Mapping[str, str] | None = None, fd: int = 2) -> logging.Formatter:
    """The daemon's formatter: journald's when stderr is the journal, else the plain one."""
    if stderr_is_journal(os.environ if environ is None else environ, fd):
        return JournalFormatter()
    return logging.Formatter(PLAIN_FORMAT)


def line(levelno: int, message: str, environ: Mapping[str, str] | None = None, fd: int = 2) -> str:
    """One message as the daemon would log it, for processes that set no logging up (a foreground
    guard's loss line, the lease enforcer): their lines then look like every other one."""
    record = logging.LogRecord("diskhb", levelno, "", 0, message, None, None)
    return formatter(environ, fd).format(record)
