"""Every duration diskhb derives, in one place, in milliseconds (sanlock's timeouts.c idea).

Rules of this file:
- Each derived duration is one named function of configured numbers; nothing else in diskhb
  adds margins of its own. Each constraint between them is checked once, in a check_* function
  that raises TimingError naming the key and the smallest value that works.
- No I/O, no clock: callers pass `issued_ms` etc. of their injected monotonic clock.

THE FAULT MODEL (what every safety argument of diskhb rests on)
  F1 LANDING: a write we issue lands on the medium (or fails) at some moment between its issue
     and write_land_max_ms after it, at most once, whole sectors at a time. Before its
     completion we do not know whether it landed. (No software can stop a write already queued
     in the kernel; a watchdog that resets a node whose write is older than the bound is what
     makes F1 true on real hardware: the next issue builds it.)
  F2 READING: a read returns, for each sector, its content at some moment between the read's
     submission and its completion; sectors of one read may be sampled at different moments.
  F3 TIME: a host's monotonic clock never goes back; clocks of different hosts are never compared.
     A process may be frozen (SIGSTOP, VM pause, swapped) at any point for any time.
  F4 EXIT: a process that has exited has no write in flight (Linux finishes a thread's direct
     I/O before the thread exits; a SIGKILLed writer waits in D state until then, holding what it
     holds, its node-local ballot lock included: tests/regions/test_fault_model.py shows it).

HEARTBEAT (cluster-wide, stored in every region's superblock)
  interval_ms        one beat per interval on every region
  dead_ms            a node whose beat has not advanced for dead_ms is dead   (> 2 x interval)
  io_timeout_ms      our own I/O slower than this makes the region unhealthy (< dead_ms)
  write_land_max_ms  F1's bound, 2 x io_timeout_ms: a write we gave up on may land until then,
                     so its sector is not written again by us before (mmp.ledger); a node holding
                     guarded storage with a write older than this fences itself (self_fence SF4)
  lease (self_fence_lease_ms = dead_ms): a node without quorum and without a landed write of its
                     own for this long fences itself (self_fence SF3)
  watchdog_ms        the cluster's watchdog timeout (superblock; 0: none): every node's [watchdog]
                     is at most this (check_watchdog_timing); peers count on it at a victim's
                     self-fence deadline (self_fence_deadline_ms), which is never used without it

MMP GUARD (per resource; the holder H writes its seq block every interval, claimants watch it)
  I       the interval the holder advertises in its last write (adaptive, like ext4's: it grows
          to 2 x the slowest recent I/O cycle, from the configured base up to ceiling(base))
  M       MMP_MARGIN_MS, ext4's "+1 s"
  C(I)    classic_wait_ms(I) = 2 I + M: how long a claimant watches an unchanged block
  B       loss_budget_ms: the whole loss action (kill with its grace, remount-ro, command), plus
          the slack to notice the loss
  For H's write w_k issued at i_k advertising I_k:
    HD-issue    the next write is issued by           i_k + I_k + M       (mmp_issue_deadline_ms)
    takeover    a claimant can take over at the earliest   i_k + C(I_k)   (mmp_takeover_ms):
                its watch starts no sooner than w_k landed (>= i_k) and lasts C(I_k)
    HD-loss     unless a newer write completed, H declares the loss at takeover - B
                (mmp_loss_deadline_ms), so its loss action ends before anyone may take over;
                a newer write completing after that moment is a loss too (it may have landed
                after a claimant's watch ended)
    HD-lease    H's consumers may write until the loss action has run; the independent lease
                enforcer (mmp.sentinel) fires at takeover - its own budget if H stops renewing
  So the next write has at least I - B to complete when issued at the last moment:
  check_mmp_timing requires I_base >= B + MMP_WRITE_MIN_MS.

A worked timeline (base interval 1000 ms, on_loss kill with grace 500 ms: B = 100 + 500 + 200 = 800):
      0  H issues w_k (I_k = 1000); it lands at 2, completes at 5.
   1000  H's verify read is due; it shows w_k still there; H issues w_{k+1} at 1003.
         The device hangs: w_{k+1} never completes.
   2000  HD-issue deadline of w_{k+1} (met: issued at 1003).
   2200  HD-loss: w_{k+1} has not completed: H declares the resource lost and starts its loss
         action: SIGTERM to the users of the mountpoint; SIGKILL to what is left at 2700.
   2800  loss action done (the scan of /proc included).
   2800  the enforcer, renewed to takeover - its budget (200 ms), would fire here if H had frozen.
   3000  earliest takeover by a claimant that watched w_k (it cannot have started before 0).
  If instead w_{k+1} landed at 1010 and only its completion hung: the claimant sees the change
  at 1010 and watches w_{k+1} from then on: takeover no sooner than 1003 + 3000; H still stops at
  2200, and anything H wrote after 1003 was covered by w_{k+1}'s own lease.
A daemon that crashed holding a resource: peers call it dead after dead_ms (+ one interval to
read it); a claimant then watches its block for C(I) (a dead node that is not fenced may be cut
off and still writing). Clean leave: the daemon releases (CLEAN) before it publishes LEFT, so a
peer takes over at once.
"""

from __future__ import annotations

from dataclasses import dataclass


class TimingError(ValueError):
    """Settings that cannot be safe (or cannot work): the message names the key and the fix."""


# -- heartbeat -----------------------------------------------------------------------------------

HEARTBEAT_INTERVAL_MS_DEFAULT = 200
HEARTBEAT_DEAD_MS_DEFAULT = 2000
# A cluster beats at least every 10 s and no faster than every 20 ms (below that Python's
# scheduling noise is as large as the interval). dead_ms > 2 x interval, Heartbeat's deadtime
# rule, so one late beat never kills a node.
HEARTBEAT_INTERVAL_MS_MIN, HEARTBEAT_INTERVAL_MS_MAX = 20, 10_000
DEAD_MS_MAX = 600_000
IO_TIMEOUT_MS_MIN = 10
WRITE_LAND_IO_TIMEOUTS = 2  # F1's bound in io timeouts


def default_io_timeout_ms(interval_ms: int, dead_ms: int) -> int:
    """Half the dead time: our own late write is flagged well before peers would call us dead."""
    return max(IO_TIMEOUT_MS_MIN, dead_ms // 2)


def write_land_max_ms(io_timeout_ms: int) -> int:
    """F1: how long after its issue a write of ours may still land."""
    return WRITE_LAND_IO_TIMEOUTS * io_timeout_ms


def check_heartbeat_timing(interval_ms: int, dead_ms: int, io_timeout_ms: int) -> None:
    if not HEARTBEAT_INTERVAL_MS_MIN <= interval_ms <= HEARTBEAT_INTERVAL_MS_MAX:
        raise TimingError(f"interval {interval_ms} ms not in {HEARTBEAT_INTERVAL_MS_MIN}..{HEARTBEAT_INTERVAL_MS_MAX}")
    if not 2 * interval_ms < dead_ms <= DEAD_MS_MAX:
        raise TimingError(f"dead time {dead_ms} ms must exceed 2 x interval ({2 * interval_ms} ms)"
                          f" and be at most {DEAD_MS_MAX} ms")
    if not IO_TIMEOUT_MS_MIN <= io_timeout_ms < dead_ms:
        raise TimingError(f"I/O timeout {io_timeout_ms} ms must be in {IO_TIMEOUT_MS_MIN}..{dead_ms - 1} ms"
                          " (below the dead time, so a hung write is noticed before peers declare us dead)")


RESTART_QUIET_INTERVALS = 3


def restart_quiet_ms(interval_ms: int) -> int:
    """How long a node's current incarnation must have shown no advance on every region before a
    new generation is believed (liveness R4, R5). A live writer is seen advancing on a region that
    reads it at least every 2 intervals (its beats and our reads drift against each other), plus
    one interval for a corrupt or missed read. A real restart silences the old incarnation
    everywhere at once, so it pays this once; a replayed recording while the node beats on any
    region we read can never find the current generation this quiet."""
    return RESTART_QUIET_INTERVALS * interval_ms


def self_fence_lease_ms(dead_ms: int) -> int:
    """Self-fencing SF3: how long a node cut off from quorum goes on without a write of its own
    landing before it stops: as long as its peers need to call it dead."""
    return dead_ms


VIEW_FRESH_INTERVALS = 3


def view_fresh_ms(interval_ms: int) -> int:
    """How long a peer's link view (the ids it sees alive) counts after we received it: one beat
    lost or late is no change of view (self_fence SF3, fencing FD11)."""
    return VIEW_FRESH_INTERVALS * interval_ms


def self_fence_deadline_ms(*, advanced_ms: int, excluded_ms: int | None, interval_ms: int, dead_ms: int,
                           io_timeout_ms: int, watchdog_ms: int) -> int:
    """SELF-FENCE DEADLINE (fencing FD11): the moment, on our clock, after which a peer that we
    have not seen advance since advanced_ms, and that no quorum member's link view has shown
    alive since excluded_ms, has certainly stopped writing:
      - self_fence SF3 fences it once none of its writes landed for the lease and no quorate set
        hears it: its last landed write was submitted no later than we saw it (advanced_ms), and
        it stops counting a member's view view_fresh_ms after receiving it, the view itself
        delivered within dead_ms of being sent after excluded_ms (a datagram's delay);
      - it acts at its next judgement (one interval), and from then on its watchdog is not fed:
        reset within watchdog_ms; a write it issued before lands within write_land_max_ms (F1);
      - a frozen node is reset by its watchdog from its last keepalive, which was no later than
        either bound (it feeds only while not self-fenced).
    Without link regions (excluded_ms None) nothing but the disk connects nodes: its lease alone.
    Durations of different hosts are compared, never their clocks (F3)."""
    stop = advanced_ms + self_fence_lease_ms(dead_ms)
    if excluded_ms is not None:  # a cluster with links: no member's view has listed it since excluded_ms
        stop = max(stop, excluded_ms + dead_ms + view_fresh_ms(interval_ms))
    return stop + interval_ms + max(watchdog_ms, write_land_max_ms(io_timeout_ms))


def check_watchdog_timing(cluster_watchdog_ms: int, local_watchdog_ms: int | None) -> None:
    """The cluster's watchdog timeout (in every region's superblock) is what peers wait for at a
    self-fence deadline: a node whose own watchdog is missing or slower could still write after
    peers took its storage over."""
    if cluster_watchdog_ms == 0:
        return
    if local_watchdog_ms is None:
        raise TimingError(f"the cluster relies on a watchdog of at most {cluster_watchdog_ms / 1000:g} s (its"
                          " superblock) but this node has no [watchdog]: add one, with timeout_s at most that")
    if local_watchdog_ms > cluster_watchdog_ms:
        raise TimingError(f"[watchdog] timeout_s {local_watchdog_ms / 1000:g} exceeds the cluster's"
                          f" {cluster_watchdog_ms / 1000:g} s (its superblock): peers would take this node's storage"
                          " over before its watchdog resets it; use at most that")


def stall_report_ms(interval_ms: int) -> int:
    """A tick this late means our own process was stalled (frozen, starved): logged once on waking."""
    return max(1000, 5 * interval_ms)


# -- MMP guard -----------------------------------------------------------------------------------

MMP_INTERVAL_MS_DEFAULT = 1000
MMP_INTERVAL_MS_MIN = 20  # below this Python's scheduling noise is as large as the interval
MMP_INTERVAL_MS_MAX = 300_000  # ext4's ceiling for the adaptive check interval (300 s)
MMP_MARGIN_MS = 1000  # ext4's "+1 s" in 2 x interval + 1 s
MMP_COMMIT_WINDOW_MS = 500  # a claim's seq write rests on a check read at most this old (mmp.acquisition)
MMP_CEILING_FACTOR = 8  # the adaptive interval of a hold never exceeds 8 x its base (ceiling)
MMP_WRITE_MIN_MS = 10  # the least time a last-moment write gets to complete
LOSS_NOTICE_SLACK_MS = 100  # how late a holder may notice its loss deadline (its loop's granularity)
KILL_SCAN_MS = 200  # finding the users of a mountpoint in /proc, and signalling them
LOSS_COMMAND_TIMEOUT_MS_DEFAULT = 30_000
REMOUNT_TIMEOUT_MS_DEFAULT = 1_000


def classic_wait_ms(interval_ms: int) -> int:
    """How long an unchanged block must be watched before its holder is taken to be gone."""
    return 2 * interval_ms + MMP_MARGIN_MS


def mmp_ceiling_ms(base_interval_ms: int) -> int:
    """The largest interval a hold with this base may ever advertise. A claim's ballot carries
    it, so a claimant that cannot read a holder's own block (overwritten by a late landing)
    still knows how long that holder may go on (mmp.acquisition CL2)."""
    return min(MMP_INTERVAL_MS_MAX, MMP_CEILING_FACTOR * base_interval_ms)


def mmp_issue_deadline_ms(issued_ms: int, interval_ms: int) -> int:
    """HD-issue: the last moment the write after one issued at issued_ms may be issued."""
    return issued_ms + interval_ms + MMP_MARGIN_MS


def mmp_takeover_ms(issued_ms: int, interval_ms: int) -> int:
    """The earliest moment a claimant that watched the write issued at issued_ms can take over."""
    return issued_ms + classic_wait_ms(interval_ms)


def mmp_loss_deadline_ms(takeover_ms: int, loss_budget_ms: int) -> int:
    """HD-loss: the holder declares the loss here unless a newer write of it has completed."""
    return takeover_ms - loss_budget_ms


def loss_budget_ms(kinds: tuple[str, ...], *, kill_grace_ms: int, remount_timeout_ms: int,
                   command_timeout_ms: int, mountpoint: bool = True) -> int:
    """The whole loss action, the kinds run one after the other (kill first), plus the slack to
    notice the deadline. 0 for "none": nothing of ours has to stop (consumers that check the
    epoch fencing token reject the old holder themselves)."""
    if not set(kinds) - {"none"}:
        return 0
    total = LOSS_NOTICE_SLACK_MS
    if "kill" in kinds:  # a process group is signalled at once; a mountpoint's users are found first
        total += kill_grace_ms + (KILL_SCAN_MS if mountpoint else 0)
    if "remount-ro" in kinds:
        total += remount_timeout_ms
    if "command" in kinds:
        total += command_timeout_ms
    return total


def min_mmp_interval_ms(loss_budget: int) -> int:
    return loss_budget + MMP_WRITE_MIN_MS


def check_mmp_timing(interval_ms: int, loss_budget: int) -> None:
    """The loss action must fit between the loss deadline and the earliest takeover, with the
    last write still given MMP_WRITE_MIN_MS to complete."""
    if not MMP_INTERVAL_MS_MIN <= interval_ms <= MMP_INTERVAL_MS_MAX:
        raise TimingError(f"{interval_ms} not in {MMP_INTERVAL_MS_MIN}..{MMP_INTERVAL_MS_MAX}")
    need = min_mmp_interval_ms(loss_budget)
    if interval_ms < need:
        raise TimingError(f"{interval_ms} ms leaves no room for the loss action ({loss_budget} ms with its grace"
                          f" and timeouts, which must end before another node may take over): use at least {need},"
                          " or shorten kill_grace_ms / remount_timeout_ms / loss_command_timeout_ms")


@dataclass(frozen=True, slots=True)
class MmpTiming:
    """One hold's numbers: its base interval and its loss budget (checked)."""

    interval_ms: int
    loss_budget_ms: int

    def __post_init__(self) -> None:
        check_mmp_timing(self.interval_ms, self.loss_budget_ms)

    @property
    def ceiling_ms(self) -> int:
        return mmp_ceiling_ms(self.interval_ms)
