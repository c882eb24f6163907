"""python -m tools.sim --seeds N [--start S] [--nodes K] [--seconds T] [--procs P] [--jobs J] [--trace] [--quorum-only]
   python -m tools.sim --schedules [A..E] [--trace]

Runs N seeded schedules of a K-node cluster for T simulated seconds each and prints one line:
"N schedules, V violations, X simulated node-seconds, Y x real time". On a violation it prints
the seed, the broken invariant, the last lines of its trace and the trace hash, and exits 1; the
same seed replays the same trace (same hash). --quorum-only runs only the seeds among those N whose
profile is a quorum one (tools.sim.world.QUORUM: [quorum], disk pills, self-fencing, watchdogs).

--schedules runs the scripted regression schedules A-E (tools.sim.schedules: the five double
holders of the MMP guard's rework) instead, one line each; exit 1 if one ends in a violation or
did not come about as scripted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time


def run_one(args: tuple[int, int, int, int | None]) -> tuple[int, str | None, str, list[str], dict, int, int]:
    from tools.sim.world import World

    seed, nodes, seconds, procs = args
    w = World(seed, nodes=nodes, seconds=seconds, procs=procs).run()
    v = w.checker.violation
    return seed, (str(v) if v else None), w.trace_hash, (list(w.trace)[-60:] if v else []), dict(w.checker.stats), \
        w.steps, w.end_ms


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block: the operator's mistake and its fix
        print(f"{self.prog.split()[-1]}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m tools.sim", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--procs", type=int, default=None,
                    help="command-line guard processes beside the daemons (default: 5, at most 8 - nodes)")
    ap.add_argument("--jobs", type=int, default=0, help="processes (default: one per core)")
    ap.add_argument("--trace", action="store_true", help="print the whole trace of each seed")
    ap.add_argument("--quorum-only", action="store_true",
                    help="of the N seeds, run only those whose profile is a quorum one (World.pick_profile)")
    ap.add_argument("--schedules", nargs="?", const="ABCDE", metavar="LETTERS",
                    help="run the scripted regression schedules (default all: ABCDE) instead of random seeds")
    a = ap.parse_args(argv)
    if a.schedules is not None:
        return run_schedules(a.schedules, a.trace)
    bad = [f"--seeds {a.seeds} must be >= 1" if a.seeds < 1 else "",
           f"--start {a.start} must be >= 0" if a.start < 0 else "",
           f"--nodes {a.nodes} must be in 1..8" if not 1 <= a.nodes <= 8 else "",
           f"--seconds {a.seconds} must be in 1..86400" if not 1 <= a.seconds <= 86400 else "",
           f"--jobs {a.jobs} must be >= 0" if a.jobs < 0 else "",
           f"--procs {a.procs} must be in 0..{8 - a.nodes} with --nodes {a.nodes}"
           if a.procs is not None and not 0 <= a.procs <= 8 - a.nodes else ""]
    bad = [b for b in bad if b]
    if bad:
        print(f"tools.sim: error: {bad[0]}", file=sys.stderr)
        return 2
    jobs = a.jobs or multiprocessing.cpu_count()
    seeds = range(a.start, a.start + a.seeds)
    if a.quorum_only:
        from tools.sim.world import Rng, World

        seeds = [s for s in seeds if World.pick_profile(s, Rng(s)).quorum]
    work = [(s, a.nodes, a.seconds, a.procs) for s in seeds]
    t0 = time.monotonic()
    violations, totals, steps, sim_ms = [], {}, 0, 0
    if jobs == 1 or a.trace:
        results = map(run_one, work)
    else:
        pool = multiprocessing.Pool(jobs)
        results = pool.imap_unordered(run_one, work, chunksize=4)
    for seed, violation, digest, trace, stats, n, end_ms in results:
        steps += n
        sim_ms += end_ms
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
        if a.trace:
            print(f"seed {seed}: trace {digest}")
        if violation:
            violations.append((seed, violation, digest, trace))
    real = time.monotonic() - t0
    node_s = sim_ms // 1000 * a.nodes  # some profiles run longer than --seconds (Profile.run_x)
    sim_s = sim_ms / 1000
    print(f"{len(work)} schedules, {len(violations)} violations, {node_s} simulated node-seconds,"
          f" {sim_s / real / jobs:.0f} x real time per core ({jobs} jobs, {real:.1f} s,"
          f" {steps} node steps; {', '.join(f'{k} {v}' for k, v in sorted(totals.items()))})")
    for seed, violation, digest, trace in sorted(violations)[:5]:
        print(f"\nseed {seed}: {violation} (trace {digest}; replay: python -m tools.sim --seeds 1 --start {seed}"
              f" --nodes {a.nodes} --seconds {a.seconds} --jobs 1)")
        print("\n".join("  " + line for line in trace))
    return 1 if violations else 0


def run_schedules(letters: str, trace: bool) -> int:
    from tools.sim import schedules

    names = letters.upper().replace(",", "")
    unknown = sorted(set(names) - set(schedules.SCHEDULES))
    if unknown or not names:
        print(f"tools.sim: error: --schedules {letters!r}: known are {''.join(schedules.SCHEDULES)}", file=sys.stderr)
        return 2
    bad = 0
    for name in names:
        w, script = schedules.run(name)
        if trace:
            print("\n".join("  " + line for line in w.trace))
        print(schedules.line(name, w, script), flush=True)
        bad += bool(w.checker.violation or script.missing())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
