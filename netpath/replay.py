"""Which authenticated heartbeats are fresh: the replay rule, free of I/O.

Someone without the key cannot forge a heartbeat, but can record real ones and send them again
(or the network can duplicate them). This file decides, per sender, whether an authenticated
packet is news. Times are `now_ms` of our injected monotonic clock; the sender's `mono_ms` is
only ever compared with the same sender's earlier values.

State per sender node: its current generation, the highest seq accepted in it and the sender's
mono_ms that came with it, when we last accepted one (our clock), its beat interval as the
sender's own clock shows it, and the generations it left behind.

Rules (one guard per region: each link judges its own traffic):
  P1  The first packet accepted from a node is taken as it is: there is nothing to compare it
      with (the liveness core treats a first sample as a baseline, not as a sign of life).
  P2  Its current generation: accepted iff seq > highest and mono_ms >= the mono_ms accepted with
      the highest (a real sender's clock never goes back). seq == highest is "duplicate"; any
      other is "replay".
  P3  A generation it left behind (the last RETIRED_MAX): "old_generation".
  P4  Any other generation (the node restarted) replaces the current one only when the current
      one has gone quiet here:
        a) the sender's mono_ms is past the current generation's (a daemon restart on the same
           boot: CLOCK_MONOTONIC kept running) and the current generation has been silent for
           QUIET_BEATS of its beat intervals; or
        b) the current generation has been silent for reboot_quiet_ms (a reboot resets the
           sender's monotonic clock, so a) cannot tell new from old; no reboot is that fast).
      Otherwise "old_generation". The silence condition is what keeps a live node safe: a
      recording from an earlier, longer boot (whose mono_ms ran further) can never displace a
      generation that is still beating.
  Bounds: one entry per node id (the caller validated 1..NODE_ID_MAX), RETIRED_MAX per node.

What no rule on a one-way broadcast medium can stop (documented, not hidden): once a node has
been silent on a link for reboot_quiet_ms (dead, or the link is cut), someone who recorded that
node's traffic from an earlier boot can replay it there, and this guard takes it (P4b: nothing
here tells it from a reboot); after our own start the first generation we hear is taken too
(P1). What such a replay can then do is bounded by the liveness core (diskhb.core.liveness R2,
R4, R5), which believes a restart, a LEFT or any other change of state only from an incarnation
it has seen advancing:
  - while the node is seen beating on any region (another link, a disk): nothing. The replayed
    generation stays a candidate on this link, however many packets and however fast: no
    restart, no LEFT, the node's other regions untouched, its real beats still counting.
  - once the node has been silent on every region for restart_quiet_ms (dead, paused, or cut
    off everywhere): it can look restarted and, after one more advancing packet, left. When the
    real node beats again, a replayed LEFT is not believed while its generation moves, and that
    generation wins back as soon as the replay stops.
  - at our own start, a replay heard before the node's real generation has moved anywhere is
    taken as the node's first generation (a baseline) and, with two more packets, can look left;
    once the real generation moves on any region (within restart_quiet_ms), it cannot.
An MMP resource still cannot be taken over through such a LEFT: the guard's fast path takes over
on LEFT only when the resource's block names the very generation that left (diskhb.mmp.fast_path,
FP3), and a holder that is running now does not write under a generation recorded from an
earlier boot. Rotating the key (netpath.keys) makes every recording made under the old key
worthless.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RETIRED_MAX = 8  # generations remembered per node (liveness keeps as many: OLD_GENERATIONS_MAX)
QUIET_BEATS = 3  # a live sender that misses this many beats in a row on a link is not live there
GAP_UNKNOWN_MS = 1000  # assumed beat interval until two beats of a generation were seen
GAP_MS_MAX = 10_000  # the format's longest beat interval (INTERVAL_MS_MAX)
REBOOT_QUIET_MS = 10_000


@dataclass(slots=True)
class _Sender:
    generation: int
    seq: int
    mono_ms: int
    heard_ms: int  # our clock when we last accepted a packet of `generation`
    gap_ms: int = GAP_UNKNOWN_MS  # sender's beat interval, from its own mono_ms steps
    retired: list[int] = field(default_factory=list)


class ReplayGuard:
    def __init__(self, *, reboot_quiet_ms: int = REBOOT_QUIET_MS):
        assert reboot_quiet_ms > 0
        self.reboot_quiet_ms = reboot_quiet_ms
        self._senders: dict[int, _Sender] = {}

    def __len__(self) -> int:
        return len(self._senders)

    def check(self, now_ms: int, node_id: int, generation: int, seq: int, mono_ms: int) -> str | None:
        """None if the packet is fresh (and remember it), else the reason it is not."""
        s = self._senders.get(node_id)
        if s is None:  # P1
            self._senders[node_id] = _Sender(generation, seq, mono_ms, now_ms)
            return None
        if generation == s.generation:  # P2
            if seq == s.seq:
                return "duplicate"
            if seq < s.seq or mono_ms < s.mono_ms:
                return "replay"
            step = (mono_ms - s.mono_ms) // (seq - s.seq)
            s.gap_ms = min(max(step, 1), GAP_MS_MAX)
            s.seq, s.mono_ms, s.heard_ms = seq, mono_ms, now_ms
            return None
        if generation in s.retired:  # P3
            return "old_generation"
        silent_ms = now_ms - s.heard_ms
        restarted = mono_ms > s.mono_ms and silent_ms >= QUIET_BEATS * s.gap_ms  # P4a
        rebooted = silent_ms >= self.reboot_quiet_ms  # P4b
        if not (restarted or rebooted):
            return "old_generation"
        s.retired.append(s.generation)
        del s.retired[:-RETIRED_MAX]
        s.generation, s.seq, s.mono_ms, s.heard_ms, s.gap_ms = generation, seq, mono_ms, now_ms, GAP_UNKNOWN_MS
        return None

    def current(self, node_id: int) -> tuple[int, int] | None:
        """(generation, highest seq) accepted from the node, for status and tests."""
        s = self._senders.get(node_id)
        return None if s is None else (s.generation, s.seq)
