"""Does this node hold a resource, and healthily? The verdict of `diskhb mmp check` (what the
Pacemaker resource agent ocf:diskhb:guard monitors and stops by), free of I/O: the CLI asks this
node's daemon for its snapshot and, when that does not settle it, reads the resource's block,
then hands both here with its monotonic now.

A verdict is an exit code, a word and one line. Codes: 0 held; 1 not held by this node (cleanly:
nothing of this node holds or renews it); 3 neither (not healthy, in transit, or unprovable);
the resource agent maps them to OCF_SUCCESS, OCF_NOT_RUNNING and OCF_ERR_GENERIC.

  CK1 HELD: this node's daemon answered and lists the resource `held` with its loss deadline still
      ahead of now. The deadline is on the daemon's monotonic clock, and so is now: both are the
      host's CLOCK_MONOTONIC (diskhb.runtime.monotonic_ms), and the control socket is local.
      (A checker in another time namespace than the daemon would misjudge it: run it where the
      daemon runs, as the resource agent does.) Only this is exit 0: a hold the daemon answers for
      and renews in time.
  CK2 EXPIRED: listed `held` but now is at or past its loss deadline: the daemon did not renew it
      in time (its loop or its MMP write is stuck); its loss action runs or is about to, and
      another node may take it over at the takeover time (3).
  CK3 IN TRANSIT: listed `lost` (its loss action runs), `releasing`, or being acquired (3): neither
      held nor cleanly stopped; a stop waits (lost) or asks for the release (which also cancels an
      acquisition in progress).
  CK4 PROCESS: no daemon lists it but the block names this node under the generation of a live
      process of this node that keeps a holder record (`mmp run`, `mmp acquire --foreground`):
      held, but not by the daemon (3); `diskhb mmp release` asks that process to release it.
  CK5 STALE: the block names this node as its holder under a generation that no answering daemon
      and no live process of this node renews (an earlier incarnation that crashed or was killed;
      a hold this daemon gave up on without a confirmed CLEAN): nobody renews it, peers take it
      over after the classic watch (at once once this node is fenced), and `diskhb mmp release
      --force` takes it over and writes CLEAN from here (3). Not "stopped": the block still
      says ours, and a stop that claimed success would let peers wait on it unaware.
  CK6 SILENT: a daemon socket that accepts but does not answer (a frozen or overloaded daemon; it
      may resume and write) while the block names this node (3). If the block names someone else
      or nobody, nothing of ours holds it now (1).
  CK7 FREE: the block names another node, nobody (CLEAN, FSCK) or no block is bound to the name,
      and no daemon or process of this node lists it (1). With no daemon running this is DOWN,
      the same verdict (a daemon that stopped cleanly released everything first).
  CK8 UNKNOWN: the block could not be read (I/O error, or the region cannot be opened while a
      daemon runs) and no answering daemon holds it: not held cannot be proven (3). A region that
      cannot be opened while no daemon runs is no hold of this node (a node that cannot open the
      device holds nothing on it): 1, so a probe on a node without the device is clean.
"""

from __future__ import annotations

from dataclasses import dataclass

HELD = 0
NOT_HELD = 1
TROUBLE = 3

DAEMON_ANSWERED = "answered"
DAEMON_GONE = "gone"  # no socket, or nobody listens on it
DAEMON_SILENT = "silent"  # a listener that did not answer in time


@dataclass(frozen=True, slots=True)
class Block:
    """What the resource's block says (None for the whole: no block is bound to the name)."""
    state: str  # "held", "clean", "fsck", "corrupt", ...
    holder_id: int = 0
    holder_name: str = ""
    generation: int = 0
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int  # HELD, NOT_HELD or TROUBLE
    word: str  # held, expired, lost, releasing, acquiring, process, stale, silent, free, down, unknown
    text: str

    def line(self) -> str:
        return f"{self.word}: {self.text}"


def judge(resource: str, node_id: int, *, daemon: str, snapshot: dict | None, now_ms: int,
          block: Block | None = None, block_error: str | None = None, open_error: str | None = None,
          process_pid: int | None = None) -> Verdict:
    """The verdict (rules CK1-CK8). `snapshot`: the daemon's answer when daemon is DAEMON_ANSWERED.
    `block`/`block_error`/`open_error`: the disk's word, when read (see needs_block); open_error:
    the region could not even be opened. process_pid: a live process of this node whose holder
    record names the block's generation."""
    if daemon == DAEMON_ANSWERED and snapshot is not None:
        pid = (snapshot.get("node") or {}).get("pid")
        by = f"the daemon (pid {pid})" if pid else "the daemon"
        entry = next((m for m in snapshot.get("mmp") or [] if m.get("resource") == resource), None)
        if entry is not None:
            state = entry.get("state")
            epoch = entry.get("epoch")
            if state == "held":
                deadline = entry.get("loss_deadline_ms") or entry.get("takeover_ms") or 0
                left = deadline - now_ms
                if left > 0:  # CK1
                    return Verdict(HELD, "held", f"{resource} is held by {by}, epoch {epoch}, lease renewed"
                                                 f" ({left / 1000:.1f} s before its loss deadline)")
                return Verdict(TROUBLE, "expired", f"{resource} is listed held by {by} (epoch {epoch}) but its"
                                                   f" lease was not renewed: {-left / 1000:.1f} s past its loss"
                                                   " deadline (a stuck loop or MMP write; its loss action runs)")
            if state == "lost":  # CK3
                return Verdict(TROUBLE, "lost", f"{resource} was lost by {by} (epoch {epoch}); its loss action"
                                                " is running")
            return Verdict(TROUBLE, state or "unknown", f"{resource} is {state} in {by} (epoch {epoch})")
        if resource in (snapshot.get("mmp_acquiring") or []):  # CK3
            return Verdict(TROUBLE, "acquiring", f"{by} is acquiring {resource} (neither held nor stopped)")
    return _by_block(resource, node_id, daemon, block, block_error, open_error, process_pid)


def needs_block(resource: str, *, daemon: str, snapshot: dict | None) -> bool:
    """Whether judge() needs the block: not when the daemon answers for the resource itself."""
    if daemon != DAEMON_ANSWERED or snapshot is None:
        return True
    listed = any(m.get("resource") == resource for m in snapshot.get("mmp") or [])
    return not listed and resource not in (snapshot.get("mmp_acquiring") or [])


def _by_block(resource: str, node_id: int, daemon: str, block: Block | None, block_error: str | None,
              open_error: str | None, process_pid: int | None) -> Verdict:
    nobody = {DAEMON_ANSWERED: "this node's daemon does not hold it",
              DAEMON_GONE: "no daemon of this node runs",
              DAEMON_SILENT: "this node's daemon does not answer"}[daemon]
    if open_error is not None:  # CK8
        if daemon == DAEMON_GONE:
            return Verdict(NOT_HELD, "down", f"{resource}: {nobody} and its region cannot be opened here"
                                             f" ({open_error}): nothing of this node holds it")
        return Verdict(TROUBLE, "unknown", f"{resource}: {nobody} and its block cannot be read ({open_error})")
    if block_error is not None:  # CK8
        return Verdict(TROUBLE, "unknown", f"{resource}: {nobody} and its block cannot be read ({block_error})")
    ours = block is not None and block.state == "held" and block.holder_id == node_id
    if not ours:  # CK6 (someone else's or nobody's), CK7
        if block is None:
            where = "no MMP block is bound to that name yet"
        elif block.state == "held":
            where = f"held by node {block.holder_id} ({block.holder_name or '?'}), epoch {block.epoch}"
        else:
            where = f"{block.state.upper()}, epoch {block.epoch}"
        word = "down" if daemon == DAEMON_GONE else "free"
        return Verdict(NOT_HELD, word, f"{resource} is not held by this node ({nobody}; {where})")
    gen = f"{block.generation:#x}"
    if process_pid is not None:  # CK4
        return Verdict(TROUBLE, "process", f"{resource} is held by process {process_pid} of this node (generation"
                                           f" {gen}, epoch {block.epoch}), not by the daemon")
    if daemon == DAEMON_SILENT:  # CK6
        return Verdict(TROUBLE, "silent", f"{resource}: the block names this node (generation {gen}, epoch"
                                          f" {block.epoch}) and this node's daemon does not answer: it may"
                                          " still renew it")
    return Verdict(TROUBLE, "stale", f"{resource}: the block names this node (generation {gen}, epoch"  # CK5
                                     f" {block.epoch}) but {nobody.replace('does not hold it', 'does not renew it')};"
                                     f" 'diskhb mmp release {resource} --force' takes it over after the classic"
                                     " wait and writes CLEAN")
