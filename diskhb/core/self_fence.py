"""Self-fencing: when this node stops itself, and how it says so. I/O-free.

A node that can no longer show it is entitled to write shared storage stops writing it on its
own, at once, without waiting for anyone to shoot it (seed 003: stop the I/O, not the node).
The node core (N14) asks `check()` at every judgement (N9) and hands in pills (N12); the first
trigger that holds fences the node, for good (SF6). The triggers:

  SF1 PILL: a fence message in our mailbox meant for this incarnation (its target generation
      ours, or 0 for whoever runs): an elected fencer (diskhb.core.fencing) or an operator
      (`diskhb fence`) wrote it. Acted on at the read that finds it.
  SF2 QUORUM: with a [quorum], a node that holds or is acquiring a guarded resource and is not
      quorate. It was quorate when it began acquiring (node core N13), so this is a loss of
      quorum: the quorate side may take the storage over.
  SF3 LEASE: with a [quorum] and a disk region, a node that is not connected and none of whose
      writes landed for lease_ms (its newest write that completed OK, dated by its submission:
      it cannot have landed earlier; before any, its first beat: the slot claim writes nothing).
      Connected (node core N16): a quorate set HEARS it, the peers whose fresh link views list it
      holding a majority with it; hearing them is not enough (a link that works one way only),
      and the disk alone never tells a node that anyone reads its writes. So a node in a storage
      outage that its peers still hear on a link goes on (every node would stop at once, else);
      one cut off from both, stops. Peers count on this at its self-fence deadline (fencing FD11).
  SF4 STUCK WRITE: an MMP write of ours not completed write_land_max_ms after its issue (ledger
      LG4), or, while holding or acquiring a guarded resource, a heartbeat write of ours in
      flight that long: F1 (timing) no longer holds for it unless it stops; with a watchdog,
      stopping the feed is what resets it. A node holding nothing only reports a stuck
      heartbeat write (region health): no guarded storage rests on it, and a hung SAN must not
      reset every idle node at once.
  SF5 ACTIONS, in order (the node core carries them out): every guard abandoned (no further
      write to any MMP block; each hold ends lost and its loss action runs: kill, remount-ro,
      command), then the guarded block devices set read-only (BLKROSET), and from the first
      moment the watchdog is no longer fed. Heartbeats go on (peers must learn of it) with
      SELF_FENCED; once every loss action has finished and no write of ours to guarded storage
      can still land (ledger LG3), also READ_ONLY: the promise peers act on (fencing FD8).
  SF6 FINAL: a self-fenced incarnation never writes guarded storage again and acquires
      nothing; only a restart (a new generation, after a new slot claim) rejoins.
  SF7 I/O-FENCED: our own reservation key was removed from a guarded LUN, and no reconnect of
      ours explains it (diskhb.fencing.scsi_pr's audit): a fencer preempted this incarnation.
      The LUN refuses our writes already; the rest of guarded storage must follow at once, so
      it is a trigger like the pill (SF5's actions), acted on at the audit that finds it.
"""

from __future__ import annotations

from diskhb.core.record import record

REASONS = ("pill", "quorum-lost", "lease", "stuck-write", "io-fenced")  # diskhb_self_fence_total{reason}


@record
class SelfFenced:
    """The node fenced itself (an event: logged critical, counted by reason)."""
    reason: str  # one of REASONS
    detail: str
    at_ms: int


class SelfFence:
    def __init__(self, *, lease_ms: int, write_land_max_ms: int, started_ms: int,
                 quorum: bool, disks: bool):
        if lease_ms <= 0 or write_land_max_ms <= 0:
            raise ValueError(f"self-fence: lease {lease_ms} ms and write_land_max {write_land_max_ms} ms must be > 0")
        self.lease_ms = lease_ms
        self.write_land_max_ms = write_land_max_ms
        self.started_ms = started_ms
        self.quorum = quorum
        self.disks = disks
        self.fenced: SelfFenced | None = None  # SF6: set once, never cleared

    def pill(self, now_ms: int, detail: str) -> SelfFenced | None:
        """SF1: a fence message for this incarnation was read."""
        return self._fence(now_ms, "pill", detail)

    def io_fenced(self, now_ms: int, detail: str) -> SelfFenced | None:
        """SF7: a fencer removed our reservation key."""
        return self._fence(now_ms, "io-fenced", detail)

    def check(self, now_ms: int, *, quorate: bool, connected: bool = False, guarding: bool, landed_ms: int | None,
              oldest_beat_write_ms: int | None, mmp_lapsed_ms: int | None) -> SelfFenced | None:
        """SF2-SF4, at a judgement. connected: a quorate set hears us (SF3); guarding: a guarded
        resource is held or being acquired;
        landed_ms: the submission of our newest write that completed OK on any disk region;
        oldest_beat_write_ms: the issue of our oldest heartbeat write still in flight;
        mmp_lapsed_ms: the issue of an MMP write of ours that lapsed (ledger LG4)."""
        if self.fenced is not None:
            return None
        if self.quorum and guarding and not quorate:  # SF2
            return self._fence(now_ms, "quorum-lost", "this node lost quorum while holding guarded resources")
        if self.quorum and self.disks and not connected:  # SF3
            since = self.started_ms if landed_ms is None else max(landed_ms, self.started_ms)
            if now_ms - since >= self.lease_ms:
                return self._fence(now_ms, "lease", f"no write of ours landed for {now_ms - since} ms"
                                                    f" (lease {self.lease_ms} ms) and no quorate set hears us")
        if mmp_lapsed_ms is not None:  # SF4
            return self._fence(now_ms, "stuck-write", f"an MMP write of ours issued {now_ms - mmp_lapsed_ms} ms ago"
                                                      f" never completed (write_land_max {self.write_land_max_ms} ms)")
        if guarding and oldest_beat_write_ms is not None \
                and now_ms - oldest_beat_write_ms >= self.write_land_max_ms:  # SF4
            return self._fence(now_ms, "stuck-write", f"a heartbeat write of ours has been in flight"
                                                      f" {now_ms - oldest_beat_write_ms} ms while holding guarded"
                                                      f" storage (write_land_max {self.write_land_max_ms} ms)")
        return None

    def _fence(self, now_ms: int, reason: str, detail: str) -> SelfFenced | None:
        if self.fenced is not None:  # SF6
            return None
        self.fenced = SelfFenced(reason, detail, now_ms)
        return self.fenced
