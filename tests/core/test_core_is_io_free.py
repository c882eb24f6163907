"""The core decides and does no I/O (architecture.md): a module of diskhb.core, one of the MMP
guard's I/O-free machines, one of the SCSI-PR wire formats or the fence agent's rules, that
imports os, time, socket, threading, subprocess, random or secrets (directly or by `from X import`)
fails this test."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANNED = {"os", "time", "socket", "threading", "subprocess", "random", "secrets"}
CORE_MODULES = sorted(
    [os.path.join("diskhb", "core", f) for f in os.listdir(os.path.join(ROOT, "diskhb", "core")) if f.endswith(".py")]
    + [os.path.join("diskhb", "mmp", f"{m}.py") for m in (
        "steps", "fast_path", "binding", "ledger", "paxos", "acquisition", "hold", "guard", "format", "release",
        "check")]
    + [os.path.join("netpath", "replay.py")]
    # the SCSI-PR wire formats and the reservation key: pure functions
    + [os.path.join("diskhb", "fencing", "pr_key.py")]
    + [os.path.join("diskhb", "fencing", "scsi", f"{m}.py") for m in ("cdb", "pr_in", "sense")]
    + [os.path.join("diskhb", "pacemaker", "fence_rules.py")]  # the fence agent's decisions
)


def imported(path: str) -> set[str]:
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("path", CORE_MODULES)
def test_core_module_imports_nothing_that_does_io(path):
    bad = imported(path) & BANNED
    assert not bad, f"{path} imports {sorted(bad)}: the core takes observations and an injected clock instead"


def test_the_check_catches_an_import(tmp_path, monkeypatch):
    (tmp_path / "x.py").write_text("import os\nfrom time import monotonic\nimport json\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    assert imported("x.py") & BANNED == {"os", "time"}
