"""tools.bench.anchors: a competitor that cannot run is one line naming the command, and the
bench goes on; with sbd installed (root), one real pill: the sandboxed watcher takes a `test`
message within its 1 s loop and the sender blocks msgwait (10 s). Only `test` is ever sent."""

from __future__ import annotations

import os
import shutil

import pytest

from tools.bench import anchors


def test_failed_command_is_one_line():
    with pytest.raises(anchors.CannotRun) as e:
        anchors._run(["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"])
    assert str(e.value) == "`sh -c echo first >&2; echo 'the reason' >&2; exit 3` failed (exit 3): first | the reason"
    with pytest.raises(anchors.CannotRun, match="no-such-tool"):
        anchors._run(["no-such-tool-here"])


def test_missing_competitors_print_why_and_the_bench_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sbd nor sanlock
    assert anchors.run(1, 1, [2, 10]) == {}
    out = capsys.readouterr().out.splitlines()
    assert out == ["sbd: cannot run here: `sbd` not found: apt-get install sbd",
                   "sanlock io_timeout 2: cannot run here: `sanlock` not found: apt-get install sanlock",
                   "sanlock io_timeout 10: cannot run here: `sanlock` not found: apt-get install sanlock"]


def test_io_timeout_list():
    assert anchors.io_timeout_list("2,10") == [2, 10]
    assert anchors.io_timeout_list("2") == [2]


@pytest.mark.root
@pytest.mark.slow
def test_one_sbd_pill_seen_within_its_loop():
    if os.geteuid() != 0 or not shutil.which("sbd") or not shutil.which("unshare"):
        pytest.skip("needs root, sbd (apt-get install sbd) and unshare")
    before = set(os.listdir("/var/tmp"))
    r = anchors.bench_sbd(1)
    assert r["written"][0] < 1.5  # loop timeout 1 s, plus I/O
    assert 9.5 < r["blocked"][0] < 15  # msgwait 10 s
    assert not {d for d in set(os.listdir("/var/tmp")) - before if d.startswith("diskhb-anchor-")}
