"""Notification hooks: executables run on events, off the tick, bounded in number, time and output.

Rules of this file:
- The loop only offers: offer() maps the event (diskhb.hooks.events) and appends one run per hook
  to a bounded queue under a lock no worker holds for longer than a pop. A full queue drops the
  run and counts it (diskhb_hook_events_dropped_total); the loop never waits for a hook.
- At most `concurrency` worker threads run hooks, each run in a session and process group of its
  own, the event as one JSON line on stdin and in DISKHB_* variables, its stdout and stderr
  captured (the first OUTPUT_BYTES_MAX bytes) and logged when it ends.
- A run ends when the hook exits or at timeout_ms: then its process group gets SIGTERM and, after
  KILL_GRACE_S, SIGKILL. Whatever a hook leaves running in its group when it exits is stopped the
  same way (like the end of a systemd oneshot unit): nothing a hook starts outlives its run
  unless it leaves the group (setsid, systemd-run). A process stuck in the kernel ignores SIGKILL:
  it is reported and left behind, never waited for.
- A hook's result never feeds back into the cluster: a failing hook fences, releases and
  delays nothing. Failures are one log line each and counted (diskhb_hook_runs_total).
- Which files may run (find_hooks): regular, executable, owned by root (or us), writable by
  nobody else, since they run as root. A listed command that fails this refuses the start (the
  operator named it: silence at the next failover would be worse); an entry of `dir` is skipped
  with one warning (a backup or a half-installed file there must not stop the node).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from diskhb import metrics as m
from diskhb.config import HooksConfig
from diskhb.errors import OperatorError
from diskhb.hooks.events import Context, EventMapper, HookEvent, environment
from diskhb.procgroup import KILL_GRACE_S, REAP_WAIT_S, Output, communicate, group_gone, signame, stop_group, unprotect
from diskhb.runtime import wall_ms

log = logging.getLogger("diskhb.hooks")

HOOKS_MAX = 32  # commands and dir entries together (bounds the metrics' hook label too)
QUEUE_MAX = 256  # runs waiting for a worker
DIR_ENTRIES_MAX = 1000  # a hooks.d with more is a mistake (a wrong dir)
OUTPUT_BYTES_MAX = 4096  # of a run's stdout+stderr, kept for the log
OUTPUT_LINES_MAX = 20  # ... logged as at most this many lines
STOP_WAIT_S = 5.0  # at daemon stop: queued and running hooks get this long, then are killed / dropped
RESULTS = ("ok", "failed", "timeout", "error")
# run-parts' rule (Debian): letters, digits, _ and -. Keeps out editor backups (x~, x.bak,
# .x.swp, #x#) and package leftovers (x.dpkg-old, x.rpmnew) without a list of suffixes.
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV_DROPPED = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                "JOURNAL_STREAM")  # systemd's, meant for the daemon; a hook's stderr is our pipe
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def check_file(path: str) -> str | None:
    """Why `path` may not run as a hook, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be checked: {e.strerror}"
    except ValueError:
        return "is not a valid path"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(path, os.X_OK):
        return "is not executable (chmod 755 it)"
    return _unsafe(st)


def _unsafe(st: os.stat_result) -> str | None:
    if st.st_uid not in (0, os.geteuid()):
        return f"is owned by uid {st.st_uid}, not root: hooks run as root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by group or others: whoever can change it would run code as root"
    return None


def find_hooks(hc: HooksConfig, cfg_path: str, warn: Callable[[str], None]) -> tuple[str, ...]:
    """The hooks to run, in order: `commands`, then `dir`'s entries sorted by name.
    OperatorError (one line) for a command or a dir that cannot serve; warn() once per skipped entry."""
    hooks = []
    for path in hc.commands:
        problem = check_file(path)
        if problem:
            raise OperatorError(f"{cfg_path}: 'hooks.commands': {path} {problem}; fix it or remove it from the list")
        hooks.append(path)
    if hc.dir:
        hooks.extend(p for p in _scan_dir(hc.dir, cfg_path, warn) if p not in hooks)
    if len(hooks) > HOOKS_MAX:
        raise OperatorError(f"{cfg_path}: [hooks]: {len(hooks)} hooks; at most {HOOKS_MAX} (one script can run"
                            " several)")
    return tuple(hooks)


def _scan_dir(d: str, cfg_path: str, warn: Callable[[str], None]) -> list[str]:
    where = f"{cfg_path}: 'hooks.dir': {d}"
    try:
        st = os.stat(d)
    except FileNotFoundError:
        raise OperatorError(f"{where}: no such directory; create it (mode 755, owned by root) or remove the key") \
            from None
    except OSError as e:
        raise OperatorError(f"{where}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise OperatorError(f"{where}: is not a directory")
    problem = _unsafe(st)
    if problem:
        raise OperatorError(f"{where}: {problem}")
    try:
        names = os.listdir(d)
    except OSError as e:
        raise OperatorError(f"{where}: cannot be read: {e.strerror}") from None
    if len(names) > DIR_ENTRIES_MAX:
        raise OperatorError(f"{where}: {len(names)} entries; at most {DIR_ENTRIES_MAX} (is it the right directory?)")
    out = []
    for name in sorted(names):
        path = os.path.join(d, name)
        if not _NAME_OK.match(name):
            warn(f"hook {path} skipped: only names of letters, digits, '_' and '-' run (like run-parts; a backup"
                 " or package leftover?)")
            continue
        problem = check_file(path)
        if problem:
            warn(f"hook {path} skipped: it {problem}")
            continue
        out.append(path)
    return out


def hook_environment(base: dict[str, str] | os._Environ) -> dict[str, str]:
    """The daemon's environment without what is meant for the daemon alone, and a PATH."""
    env = {k: v for k, v in base.items() if k not in _ENV_DROPPED and not k.startswith("DISKHB_")}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


# -- one run ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    result: str  # one of RESULTS
    detail: str  # "exit status 0", "killed by SIGSEGV", "cannot run it: ...", "no exit after 10000 ms"
    seconds: float
    output: bytes = b""
    output_dropped: int = 0  # bytes beyond OUTPUT_BYTES_MAX
    cleanup: str = ""  # what had to be stopped after the hook exited or timed out


def run_once(path: str, data: bytes, env: dict[str, str], timeout_s: float,
             stop_at: Callable[[], float | None] = lambda: None) -> Outcome:
    """Run one hook to its end, at most timeout_s (or until stop_at(), a monotonic deadline that
    may appear while it runs), then whatever is left of its process group is stopped."""
    t0 = time.monotonic()
    try:
        p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=env, cwd="/", start_new_session=True)
    except OSError as e:
        return Outcome("error", f"cannot run it: {e.strerror or e}", time.monotonic() - t0)
    except ValueError as e:  # a NUL in the path or the environment
        return Outcome("error", f"cannot run it: {e}", time.monotonic() - t0)
    unprotect(p.pid)
    out = Output(OUTPUT_BYTES_MAX)
    try:
        exited = communicate(p, data, {p.stdout.fileno(): out}, t0 + timeout_s, stop_at)
    except BaseException:
        stop_group(p, p.pid)  # a bug of ours leaves no hook running
        raise
    finally:
        p.stdin.close()  # a no-op once closed
        p.stdout.close()
    took = time.monotonic() - t0
    if not exited:
        cleanup = stop_group(p, p.pid)
        stopping = stop_at() is not None and took < timeout_s
        why = "the daemon is stopping" if stopping else f"no exit after {round(timeout_s * 1000)} ms"
        return Outcome("timeout", why, took, bytes(out.kept), out.dropped, cleanup)
    cleanup = ""
    if not group_gone(p.pid):  # the leader is reaped: what it left behind
        cleanup = "processes it left running: " + stop_group(p, p.pid)
    rc = p.returncode
    if rc == 0:
        return Outcome("ok", "exit status 0", took, bytes(out.kept), out.dropped, cleanup)
    detail = f"exit status {rc}" if rc > 0 else f"killed by {signame(-rc)}"
    return Outcome("failed", detail, took, bytes(out.kept), out.dropped, cleanup)


# -- the runner ---------------------------------------------------------------------------------------


class HookRunner:
    """The loop's side (offer) and the workers' side (run, log, count) of the hooks."""

    def __init__(self, hc: HooksConfig, ctx: Context, cfg_path: str, *, hooks: tuple[str, ...] | None = None):
        self.hc = hc
        self.ctx = ctx
        self.cfg_path = cfg_path
        self.hooks = find_hooks(hc, cfg_path, log.warning) if hooks is None else hooks
        self._events = frozenset(hc.events) if hc.events else None
        self._mapper = EventMapper()
        self._env = hook_environment(os.environ)
        self._seq = 0
        self._dropping = 0  # runs dropped since the queue last took one (loop thread)
        self._mapper_failed = False
        self._cv = threading.Condition()
        self._pending: collections.deque = collections.deque()
        self._closing = False
        self._stop_at: float | None = None
        self._stop_dropped = 0
        self._workers = [threading.Thread(target=self._work, name=f"hook-{i}", daemon=True)
                         for i in range(hc.concurrency)]
        self._series(self.hooks)
        for t in self._workers:
            t.start()
        log.info("hooks: %s", ", ".join(self.hooks) if self.hooks else f"none yet (nothing runnable in {hc.dir})")

    # -- the loop thread ---------------------------------------------------------------------------

    def offer(self, ev) -> None:
        """Called with every core event (diskhb.report): never blocks, never raises."""
        try:
            got = self._mapper.map(ev)
        except Exception as e:  # noqa: BLE001 - a notification must never stop the heartbeat
            if not self._mapper_failed:
                self._mapper_failed = True
                log.error("hooks: internal error mapping %s: %s: %s (no hook runs for it)", type(ev).__name__,
                          type(e).__name__, e)
            return
        if got is None or (self._events is not None and got[0] not in self._events):
            return
        hooks = self.hooks  # one read: a rescan (SIGHUP) swaps the whole tuple
        if not hooks:
            return
        self._seq += 1
        he = HookEvent(got[0], self._seq, wall_ms(), got[1])
        for hook in hooks:
            with self._cv:
                full = len(self._pending) >= QUEUE_MAX
                if not full:
                    self._pending.append((hook, he))
                    self._cv.notify()
            if full:
                m.HOOK_DROPPED.labels(hook).inc()
                if not self._dropping:
                    log.warning("hooks: %d runs already waiting: dropping events for now (counted in"
                                " diskhb_hook_events_dropped_total)", QUEUE_MAX)
                self._dropping += 1
            elif self._dropping:
                log.warning("hooks: the queue takes runs again; %d runs were dropped", self._dropping)
                self._dropping = 0

    # -- other threads -----------------------------------------------------------------------------

    def rescan(self) -> None:
        """SIGHUP: look at the commands and the dir again (a hook added to hooks.d needs no restart).
        A refusal keeps the hooks we have."""
        try:
            hooks = find_hooks(self.hc, self.cfg_path, log.warning)
        except OperatorError as e:
            log.error("hooks: rescan refused, the %d hooks stay: %s", len(self.hooks), e)
            return
        self._series(hooks)
        self.hooks = hooks
        log.info("hooks rescanned: %s", ", ".join(hooks) if hooks else "none")

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """At daemon stop: runs queued or running get wait_s, then running ones are killed (their
        group) and the rest dropped. Bounded: workers are waited for at most wait_s plus a kill."""
        with self._cv:
            self._closing = True
            self._stop_at = time.monotonic() + wait_s
            self._cv.notify_all()
        end = self._stop_at + KILL_GRACE_S + REAP_WAIT_S + 1.0
        for t in self._workers:
            t.join(max(0.0, end - time.monotonic()))
        with self._cv:
            self._drop_pending()
            dropped = self._stop_dropped
        if dropped:
            log.warning("hooks: %d runs dropped at stop (not started within %.1f s)", dropped, wait_s)

    def _drop_pending(self) -> None:
        """Under the lock."""
        for hook, _ in self._pending:
            m.HOOK_DROPPED.labels(hook).inc()
        self._stop_dropped += len(self._pending)
        self._pending.clear()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if self._stop_at is not None and time.monotonic() >= self._stop_at:
                    self._drop_pending()  # stopping, and out of time: close() says how many
                if not self._pending:
                    return
                hook, he = self._pending.popleft()
            try:
                self._run(hook, he)
            except Exception as e:  # noqa: BLE001 - a worker must outlive a bad run
                m.HOOK_RUNS.labels(hook, "error").inc()
                log.error("hook %s: %s #%d: internal error: %s: %s", hook, he.name, he.seq, type(e).__name__, e)

    def _run(self, hook: str, he: HookEvent) -> None:
        payload = he.payload(self.ctx)
        data = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
        env = {**self._env, **environment(payload), "DISKHB_HOOK": hook}
        o = run_once(hook, data, env, self.hc.timeout_ms / 1000, lambda: self._stop_at)
        m.HOOK_RUNS.labels(hook, o.result).inc()
        what = f"hook {hook}: {he.name} #{he.seq}"
        level = logging.INFO if o.result == "ok" else logging.WARNING
        for line in _lines(o.output, o.output_dropped):
            log.log(level, "%s: | %s", what, line)
        if o.result == "ok":
            log.info("%s done in %.2f s", what, o.seconds)
        elif o.result == "failed":
            log.warning("%s FAILED: %s after %.2f s", what, o.detail, o.seconds)
        elif o.result == "timeout":
            log.warning("%s TIMED OUT: %s; its process group: %s", what, o.detail, o.cleanup)
        else:
            log.error("%s not run: %s", what, o.detail)
        if o.cleanup and o.result != "timeout":
            log.warning("%s: %s (start what must outlive a hook with setsid or systemd-run)", what, o.cleanup)

    @staticmethod
    def _series(hooks: tuple[str, ...]) -> None:
        """Every series at 0 from the start: a first failure is an increase() alerts see."""
        for hook in hooks:
            for result in RESULTS:
                m.HOOK_RUNS.labels(hook, result)
            m.HOOK_DROPPED.labels(hook)


def _lines(output: bytes, dropped: int) -> list[str]:
    text = output.decode("utf-8", "replace")
    lines = ["".join(c if c.isprintable() or c == "\t" else "?" for c in line) for line in text.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    more = len(lines) - OUTPUT_LINES_MAX
    lines = lines[:OUTPUT_LINES_MAX]
    if more > 0 or dropped:
        lines.append(f"... ({max(more, 0)} more lines, {dropped} more bytes not logged)")
    return lines
