"""contrib/systemd/diskhb.service: `systemd-analyze verify` passes without a word, and the settings
the daemon's safety relies on agree with the daemon's own numbers.

`systemd-analyze verify` also checks that ExecStart's program exists and is executable. The unit
names where an install puts diskhb (/usr/local/bin/diskhb), which a test machine need not have.
So verify runs on a copy in which only that path is replaced by this checkout's own `diskhb`
console script (the same program; the arguments are untouched), and the test asserts the copy
differs from the unit in that one line alone. The unit itself is verified too: its only
complaint may be that missing program. systemd need not be running (no bus is used).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys

import pytest

from cluster import ROOT
from diskhb.config import WATCHDOG_TIMEOUT_S_DEFAULT
from diskhb.core.node import LEAVE_MS_MAX
from diskhb.daemon import CLEAN_EXITS

UNIT = os.path.join(ROOT, "contrib", "systemd", "diskhb.service")
INSTALLED = "/usr/local/bin/diskhb"


def verify(path: str) -> subprocess.CompletedProcess:
    if not shutil.which("systemd-analyze"):
        pytest.skip("needs systemd-analyze (Debian package systemd)")
    return subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)


def service() -> configparser.SectionProxy:
    p = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"))
    p.optionxform = str  # systemd keys are case-sensitive
    p.read(UNIT)
    return p


def test_systemd_analyze_verify_passes(tmp_path):
    here = os.path.join(os.path.dirname(sys.executable), "diskhb")  # pyproject's console script
    if not os.access(here, os.X_OK):
        pytest.skip(f"no diskhb console script at {here} (make venv)")
    with open(UNIT) as f:
        lines = f.read().splitlines(keepends=True)
    copy = [line.replace(f"ExecStart={INSTALLED} ", f"ExecStart={here} ", 1) for line in lines]
    changed = [(a, b) for a, b in zip(lines, copy) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith(f"ExecStart={INSTALLED} run --config "), changed
    path = tmp_path / "diskhb.service"  # verify wants a unit name: the same file name
    path.write_text("".join(copy))
    r = verify(str(path))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r.stdout + r.stderr

    r = verify(UNIT)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    if os.access(INSTALLED, os.X_OK):
        assert (r.returncode, complaints) == (0, []), complaints
    else:
        assert complaints == [f"diskhb.service: Command {INSTALLED} is not executable: No such file or directory"]


def test_the_unit_never_restarts_a_node_that_stopped_for_safety():
    p = service()
    s, u = p["Service"], p["Unit"]
    assert (s["Type"], s["NotifyAccess"], s["Restart"], s["KillMode"]) == ("notify", "main", "on-failure",
                                                                         "control-group")
    prevented = set(s["RestartPreventExitStatus"].split())
    # exit 3 (self-fenced, safety stop), every refusal of CLEAN_EXITS but 0, and systemd's watchdog
    # kill (its signal, and the SIGKILL an abort that hangs becomes)
    assert prevented == {"3", s["WatchdogSignal"], "SIGKILL"} | {str(c) for c in CLEAN_EXITS if c}
    assert 3 not in CLEAN_EXITS
    assert s["WatchdogSec"] == f"{WATCHDOG_TIMEOUT_S_DEFAULT}s"
    seconds = {k: int(s[k].removesuffix("s")) for k in ("RestartSec", "TimeoutStopSec", "TimeoutStartSec")}
    assert seconds["RestartSec"] > WATCHDOG_TIMEOUT_S_DEFAULT, "a crashed node is reset before it is restarted"
    assert seconds["TimeoutStopSec"] > LEAVE_MS_MAX / 1000, "a clean leave is never SIGKILLed"
    assert int(u["StartLimitBurst"]) >= 1 and u["StartLimitIntervalSec"]
    assert s["ExecStart"].startswith(f"{INSTALLED} run --config /etc/diskhb/")
