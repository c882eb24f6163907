"""How fast the whole-cluster simulator runs: simulated cluster seconds per second of one core.

    python -m tools.bench.simspeed [--seeds 200] [--repeats 3]

One process, one core, no pool. Three workloads, each run --repeats times over the same seeds
(min / median / max of "x real time" reported):
  classic   3 daemons alone, the nine classic profiles in turn (the 3-node cluster the issue's
            target names: interval 200 ms .. 1 s, resources contended by the daemons' clients)
  all       3 daemons alone, every profile in turn (the swarm profiles hammer one MMP block
            with 200-500 ms intervals and held writes: more guard steps per simulated second)
  full      the default world of `python -m tools.sim`: 3 daemons and 5 command-line guards,
            the profile drawn from the seed
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from tools.sim import world as W

SECONDS = 30
CLASSIC = 9  # the first nine of PROFILES; the rest are the swarm profiles


def run(workload: str, seeds: int) -> float:
    t0, sim_ms = time.process_time(), 0
    for s in range(seeds):
        if workload == "full":
            w = W.World(s, seconds=SECONDS).run()
        else:
            profiles = W.PROFILES[:CLASSIC] if workload == "classic" else W.PROFILES
            w = W.World(s, seconds=SECONDS, procs=0, profile=profiles[s % len(profiles)]).run()
        sim_ms += w.end_ms  # some profiles run longer than asked (Profile.run_x)
    return sim_ms / 1000 / (time.process_time() - t0)


def main(argv: list[str] | None = None) -> int:
    from tools.sim.__main__ import OneLineParser

    ap = OneLineParser(prog="python -m tools.bench.simspeed", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("workloads", nargs="*", default=["classic", "all", "full"])
    a = ap.parse_args(argv)
    if a.seeds < 1 or a.repeats < 1 or set(a.workloads) - {"classic", "all", "full"}:
        print("simspeed: error: --seeds and --repeats must be >= 1; workloads: classic, all, full", file=sys.stderr)
        return 2
    for workload in a.workloads:
        xs = sorted(run(workload, a.seeds) for _ in range(a.repeats))
        print(f"{workload}: {a.seeds} schedules x {SECONDS} s, {a.repeats} runs: x real time per core"
              f" min {xs[0]:.0f}, median {statistics.median(xs):.0f}, max {xs[-1]:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
