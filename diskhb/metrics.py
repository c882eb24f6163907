"""Prometheus metrics (client_python conventions: diskhb_ prefix, base units, _total counters).

Label cardinality is bounded: `node` <= slot count (names), `region` <= 32 (config), `resource`
<= the MMP blocks of the regions, `hook` <= 32 (diskhb.hooks.runner.HOOKS_MAX), `state`, `flag`,
`reason`, `method`, `result` and `direction` are small fixed sets. Metrics live in the default
registry because a daemon is one process; tests that need isolation run daemons as processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram


# Buckets from 100 us to 10 s: a healthy disk heartbeat is sub-millisecond to tens of ms;
# seconds mean trouble (io_timeout is typically 1 s).
IO_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0)
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Detection is dead_ms plus up to a read interval (dead_ms is 1-30 s in practice); a fence takes
# from a pill read within an interval to a self-fence deadline of lease + watchdog timeout.
DETECTION_BUCKETS_S = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
FENCE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

# Per-node gauges (alive, state, heartbeat age, flags) are computed at scrape time by
# diskhb.daemon.NodeCollector, so the tick never pays for 2000 nodes' gauges.
NODE_TRANSITIONS = Counter("diskhb_node_transitions_total",
                           "Node state changes, by the state entered", ["node", "state"])
REGION_NODE_TRANSITIONS = Counter("diskhb_node_region_transitions_total",
                                  "Per-region node state changes (a region losing a node another region "
                                  "still sees changes only this)", ["node", "region", "state"])
DEATH_DETECTION = Histogram("diskhb_node_death_detection_seconds",
                            "How long after its last heartbeat advance a peer was declared dead",
                            buckets=DETECTION_BUCKETS_S)
NODE_RESTARTS = Counter("diskhb_node_restarts_total", "Generation changes seen", ["node"])
BAD_SAMPLES = Counter("diskhb_bad_samples_total",
                      "Heartbeats that failed validation (counted as missed beats)", ["region"])
REGION_HEALTHY = Gauge("diskhb_region_healthy", "1 if our own I/O on the region works", ["region"])
REGION_IO_BYTES = Counter("diskhb_region_io_bytes_total", "Heartbeat I/O bytes",
                          ["region", "direction"])
REGION_IOS = Counter("diskhb_region_ios_total", "Heartbeat I/O requests completed",
                     ["region", "direction"])
WRITE_LATENCY = Histogram("diskhb_heartbeat_write_latency_seconds",
                          "Own heartbeat write latency", ["region"], buckets=IO_BUCKETS_S)
READ_LATENCY = Histogram("diskhb_heartbeat_read_latency_seconds",
                         "Slot-area read latency", ["region"], buckets=IO_BUCKETS_S)
TICK_LATENESS = Histogram("diskhb_tick_lateness_seconds",
                          "How late each tick started against its schedule", buckets=LATENESS_BUCKETS_S)
TICK_DURATION = Histogram("diskhb_tick_duration_seconds", "CPU-side work per tick",
                          buckets=LATENESS_BUCKETS_S)
TICKS = Counter("diskhb_ticks_total", "Heartbeat ticks run")
LOG_DROPPED = Counter("diskhb_log_records_dropped_total",
                      "Log records dropped because the log queue was full (the tick never waits)")
SELF_INFO = Gauge("diskhb_self_info", "Static facts about this daemon", ["node", "node_id", "cluster"])

REGION_FAULTS = Counter("diskhb_region_faults_total",
                        "Internal errors of a region driver (the region counts as failing; the daemon goes on)",
                        ["region"])
REGION_RECEIVING = Gauge("diskhb_region_receiving",
                         "0 while a link region hears no peer for dead_ms although peers are alive elsewhere",
                         ["region"])
SELF_STALLS = Counter("diskhb_self_stalls_total",
                      "Times this daemon found itself stalled (frozen, stopped or starved) for longer than the"
                      " stall report threshold")
SELF_STALL_SECONDS = Gauge("diskhb_self_stall_last_seconds", "Length of the last stall of this daemon")
QUORATE = Gauge("diskhb_quorate", "1 if this node's partition holds a majority of the votes ([quorum])")
QUORUM_VOTES = Gauge("diskhb_quorum_votes", "Votes of the members this node counts for quorum")
QUORUM_EXPECTED_VOTES = Gauge("diskhb_quorum_expected_votes", "Votes a majority is counted against")
WATCHDOG_MARGIN = Gauge("diskhb_watchdog_margin_seconds", "Watchdog timeout minus the longest gap between two"
                        " keepalives seen: how much longer a stuck tick may take before the node is reset")
WATCHDOG_TIMEOUT = Gauge("diskhb_watchdog_timeout_seconds", "The watchdog device's timeout ([watchdog] timeout_s)")
WATCHDOG_ERRORS = Counter("diskhb_watchdog_keepalive_errors_total", "Keepalives the watchdog device refused")
FENCE_ATTEMPTS = Counter("diskhb_fence_attempts_total", "Fencing attempts this node made as a victim's fencer, by method"
                         " and result (fenced: verified; pending: done, the victim has not shown it yet; failed; timeout)",
                         ["method", "result"])
SELF_FENCE = Counter("diskhb_self_fence_total", "Times this daemon fenced itself, by reason (pill, quorum-lost,"
                     " lease, stuck-write)", ["reason"])
FENCE_DURATION = Histogram("diskhb_fence_duration_seconds", "From a victim named (or a fence ordered) to its fence"
                           " verified, as this node saw it, by the method that verified it", ["method"],
                           buckets=FENCE_BUCKETS_S)
FENCE_RECEIPTS = Counter("diskhb_fence_receipts_total", "Fencing receipts issued: an I/O fence (scsi-pr) whose victim"
                         " stayed frozen for one watchdog window after its key was read back gone from every LUN")
PR_REGISTERED = Gauge("diskhb_pr_registered", "1 while this node's reservation key is registered on the [scsi-pr] LUN"
                      " (as of the last registration or audit that reached it)", ["lun"])
PR_AUDITS = Counter("diskhb_pr_audits_total", "Audits of the [scsi-pr] LUNs' keys and reservations completed")
PR_AUDIT_FINDINGS = Counter("diskhb_pr_audit_findings_total", "Findings of the persistent-reservation audit, each"
                            " counted when it appears, by kind (fenced: our key was removed; registration-lost:"
                            " an iSCSI re-login lost it; foreign-key, stale-incarnation, ...)", ["kind"])
MMP_HELD = Gauge("diskhb_mmp_held", "1 while this daemon holds the MMP resource", ["resource"])

# Methods (diskhb.core.fencing, diskhb.pill) and results of FENCE_ATTEMPTS: created at 0 when
# fencing is on, so that a first failure is an increase() an alert sees, not a new series.
FENCE_METHODS = ("scsi-pr", "pill", "agent", "self", "deadline", "none")
FENCE_RESULTS = ("fenced", "pending", "failed", "timeout")
# The methods the fence runner counts itself, one increment per method run (diskhb.fencing.runner
# FR4); the reporter counts the core's own outcomes ("self", "deadline", "none": no method ran).
RUNNER_METHODS = ("scsi-pr", "pill", "agent")
SD_NOTIFY_ERRORS = Counter("diskhb_sd_notify_errors_total", "Notifications to systemd (READY, WATCHDOG, STATUS,"
                           " ...) that could not be sent (its queue full, its socket gone); the daemon goes on")

# Notification hooks (diskhb.hooks): `hook` is the executable's path, at most hooks.runner.HOOKS_MAX.
HOOK_RUNS = Counter("diskhb_hook_runs_total", "Notification hook runs, by hook and result (ok: exit 0; failed: another"
                    " exit status or a signal; timeout: killed at hooks.timeout_ms or at daemon stop; error: could not"
                    " be started)", ["hook", "result"])
HOOK_DROPPED = Counter("diskhb_hook_events_dropped_total", "Events a hook was not run for: the hook queue was full, or"
                       " the daemon stopped first", ["hook"])
