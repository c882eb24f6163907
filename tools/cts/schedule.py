"""Seeded fault schedules for the cluster test system: the same seed gives the same schedule.

A schedule is a list of faults, each at a time (seconds after the cluster is up and holding),
on one node, for a duration where it has one. Every fault ends by itself (its end is part of
the schedule) or at the heal after the fault window; nothing is left applied.

    kill        SIGKILL the daemon (its watchdog is not disarmed: it resets the node ~1 s later)
    freeze      SIGSTOP the daemon for the duration, then SIGCONT (longer than the watchdog
                timeout: the watchdog resets the node first)
    link        the node's cable cut for the duration
    disk-eio    the node's disk fails every request with EIO for the duration
    disk-hang   the node's disk holds every request for the duration; at its end they all
                complete: writes land late
    disk-slow   every request of the node's disk takes `arg` ms for the duration
    isolate     link cut and disk hung together: the node is a minority partition of one
    reset       the node's watchdog fires: every process of the node is killed at once
    restart     a node that is down starts again (a new generation); a running one is
                stopped cleanly (consumers first, as Pacemaker stops a group) and started again
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS_WEIGHTED = (("kill", 3), ("freeze", 3), ("link", 2), ("disk-eio", 2), ("disk-hang", 2), ("disk-slow", 1),
                  ("isolate", 3), ("reset", 1), ("restart", 2))
DURATIONS_S = (0.3, 0.8, 1.6, 3.0)  # below, near and beyond the watchdog (1 s) and dead time
SLOW_MS = (150, 400)
FAULTS_MIN, FAULTS_MAX = 1, 4
FIRST_HOLDER_SHARE = 0.5  # node 1 holds every resource when the faults begin: half of them hit it
WINDOW_S = 9.0  # faults start within this many seconds; the heal comes at WINDOW_S + the longest duration


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: str
    node: int
    duration_s: float = 0.0
    arg: int = 0

    def line(self) -> str:
        extra = f" for {self.duration_s:g} s" if self.duration_s else ""
        return f"t+{self.at_s:5.2f} s  {self.kind:<9} node {self.node}{extra}" + (f" ({self.arg} ms)" if self.arg else "")


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    faults: tuple[Fault, ...]

    @property
    def heal_s(self) -> float:
        """When every fault still applied is undone (SIGCONT, cables in, disks ok)."""
        return max([WINDOW_S] + [f.at_s + f.duration_s for f in self.faults]) + 0.5

    def text(self) -> str:
        return "\n".join([f"schedule seed {self.seed}:"] + [f"  {f.line()}" for f in self.faults] +
                         [f"  t+{self.heal_s:5.2f} s  heal"])


def make(seed: int, nodes: int) -> Schedule:
    rng = random.Random(seed)
    kinds = [k for k, w in KINDS_WEIGHTED for _ in range(w)]
    faults = []
    for _ in range(rng.randint(FAULTS_MIN, FAULTS_MAX)):
        kind = rng.choice(kinds)
        at = round(rng.uniform(0.0, WINDOW_S), 2)
        node = 1 if rng.random() < FIRST_HOLDER_SHARE else rng.randint(2, nodes)
        duration = rng.choice(DURATIONS_S) if kind in ("freeze", "link", "disk-eio", "disk-hang", "disk-slow",
                                                       "isolate") else 0.0
        arg = rng.choice(SLOW_MS) if kind == "disk-slow" else 0
        faults.append(Fault(at, kind, node, duration, arg))
    return Schedule(seed, tuple(sorted(faults, key=lambda f: (f.at_s, f.node, f.kind))))
