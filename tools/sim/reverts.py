"""The simulator can fail: each of the five double-holder fixes (schedules A-E), reverted in a
scratch copy of the tree, and what the simulator then finds.

    python -m tools.sim.reverts [--seeds N] [LETTERS]

For each letter: copy diskhb/ and tools/ into a temporary directory, undo that one fix there
(REVERTS: the exact lines, so a refactor that moves them makes this tool fail loudly instead of
proving nothing), then run, in the copy, the scripted schedule of that letter (it must end in a
violation) and, with --seeds N > 0, N random seeds (the CI budget is 2,000), reporting the first
seed that found a violation and how many did. One line per letter; exit 1 if a scripted schedule
passes with its fix reverted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# letter -> (what the fix is, [(file, the fixed line(s), the same reverted)])
REVERTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "A": ("CL4: honour our own abandoned block only if no ballot went past its epoch", [
        ("diskhb/mmp/acquisition.py",
         "            if view.max_lver <= seq.epoch:  # CL4",
         "            if True:  # CL4 reverted"),
    ]),
    "B": ("CL2: watch with the largest interval a later ballot proposed", [
        ("diskhb/mmp/acquisition.py",
         "        interval = max([interval_ms] + [p.interval_ms for _, p in later])\n",
         "        interval = interval_ms or 1000\n"),
        ("diskhb/mmp/acquisition.py",
         "        wider = max([w.interval_ms] + [p.interval_ms for _, p in later])\n",
         "        wider = w.interval_ms\n"),
    ]),
    "C": ("CL2: a CLEAN block under a later decided epoch is watched, not claimed", [
        ("diskhb/mmp/acquisition.py",
         "            if later:  # CL2: a later claim may hold it under an overwritten block",
         "            if False:  # reverted"),
    ]),
    "D": ("GD2/LG1: no new write to a sector while an older write of ours may still land", [
        ("diskhb/mmp/guard.py",
         "            if busy is not None:  # GD2 (a ballot write of ours timed out earlier)",
         "            if False:  # reverted"),
        ("diskhb/mmp/guard.py",
         "        if busy is not None:  # GD2\n",
         "        if False:  # reverted\n"),
    ]),
    "E": ("HD-loss: a pending bump with a shorter interval shortens the lease", [
        ("diskhb/mmp/hold.py",
         "        if self.pending is not None and self.pending_issued_ms is not None:\n            t = min(",
         "        if False:\n            t = min("),
    ]),
}


def scratch_copy(letter: str, into: str) -> str:
    """A copy of the tree (diskhb/, tools/) with fix `letter` reverted; returns its root."""
    root = os.path.join(into, letter)
    for d in ("diskhb", "tools", "netpath"):
        if os.path.isdir(os.path.join(REPO, d)):
            shutil.copytree(os.path.join(REPO, d), os.path.join(root, d),
                            ignore=shutil.ignore_patterns("__pycache__"))
    for path, fixed, reverted in REVERTS[letter][1]:
        p = os.path.join(root, path)
        with open(p) as f:
            text = f.read()
        if text.count(fixed) != 1:
            raise SystemExit(f"tools.sim.reverts: error: fix {letter}: {path} no longer has exactly one"
                             f" {fixed.strip()!r}; update REVERTS")
        with open(p, "w") as f:
            f.write(text.replace(fixed, reverted))
    return root


def sim(root: str, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.sim", *args], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": root})


def main(argv: list[str] | None = None) -> int:
    from tools.sim.__main__ import OneLineParser

    ap = OneLineParser(prog="python -m tools.sim.reverts", description=__doc__.splitlines()[0])
    ap.add_argument("letters", nargs="?", default="ABCDE")
    ap.add_argument("--seeds", type=int, default=0, help="random seeds to run in each copy too (0: none)")
    a = ap.parse_args(argv)
    bad = sorted(set(a.letters.upper()) - set(REVERTS))
    if bad or a.seeds < 0:
        print(f"tools.sim.reverts: error: letters must be from {''.join(REVERTS)} and --seeds >= 0", file=sys.stderr)
        return 2
    failed = 0
    with tempfile.TemporaryDirectory(prefix="diskhb-reverts-") as tmp:
        for letter in a.letters.upper():
            root = scratch_copy(letter, tmp)
            r = sim(root, "--schedules", letter)
            caught = r.returncode == 1 and "VIOLATION" in r.stdout
            failed += not caught
            line = f"fix {letter} reverted ({REVERTS[letter][0]}): scripted schedule " + \
                   (re.search(r"VIOLATION (I\d)", r.stdout).group(1) if caught else "PASSED (the simulator missed it)")
            if a.seeds:
                r = sim(root, "--seeds", str(a.seeds))
                first = re.findall(r"^seed (\d+): (I\d)", r.stdout, re.M)
                n = re.match(r"\d+ schedules, (\d+) violations", r.stdout)
                line += (f"; random: {n.group(1) if n else '?'} of {a.seeds} seeds violate"
                         + (f", first seed {min(int(s) for s, _ in first)}"
                            f" ({', '.join(sorted({i for _, i in first}))})" if first else ""))
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
