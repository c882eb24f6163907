"""The cluster test system (tools.cts): its schedules replay, each of its rules fails on evidence
made up to break it and passes on evidence that does not, and a short run of real schedules holds
every rule -- while a cluster broken on purpose (no loss action, watchdogs that reset nobody)
is caught writing twice. With --scsi-pr (a private tgtd's LUN, a third resource written through
iSCSI) a short run holds every rule too, PR-FENCED-WRITE included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cluster import ROOT
from tools.cts import checks
from tools.cts import schedule as sch

G2, G3 = 0x22, 0x33


def test_a_seed_is_its_schedule():
    assert sch.make(7, 3) == sch.make(7, 3)
    assert len({sch.make(s, 3) for s in range(50)}) > 45
    for s in range(200):
        x = sch.make(s, 3)
        assert sch.FAULTS_MIN <= len(x.faults) <= sch.FAULTS_MAX
        for f in x.faults:
            assert 0 <= f.at_s <= sch.WINDOW_S and 1 <= f.node <= 3
            assert (f.duration_s > 0) == (f.kind in ("freeze", "link", "disk-eio", "disk-hang", "disk-slow", "isolate"))
            assert f.at_s + f.duration_s < x.heal_s
        assert x.faults == tuple(sorted(x.faults, key=lambda f: (f.at_s, f.node, f.kind)))
    assert "seed 7" in sch.make(7, 3).text() and "heal" in sch.make(7, 3).text()


def w(resource, node, gen, epoch, t, done=0.0):
    return checks.Write(resource, node, gen, epoch, t, done)


def test_one_writer_and_epochs():
    ok = [w("r1", 2, G2, 1, 1.0), w("r1", 2, G2, 1, 1.1), w("r2", 3, G3, 1, 1.2), w("r1", 3, G3, 2, 2.0)]
    assert checks.one_writer(ok) == []
    back = ok + [w("r1", 2, G2, 1, 2.1)]  # node 2 lands a write after node 3's
    assert [v.split(":")[0] for v in checks.one_writer(back)] == ["ONE-WRITER"]
    lower = ok + [w("r1", 2, G2, 2, 2.1)]  # a new holder under an epoch no higher
    assert [v.split(":")[0] for v in checks.one_writer(lower)] == ["EPOCHS"]


def history(marks=(), events=(), *, beating=((2, G2, 0.5), (3, G3, 0.5))) -> checks.History:
    base = [(0.0, n, "daemon", 100 + n) for n in (1, 2, 3)]
    evs = [checks.LogEvent(t, n, "beating", n, g) for n, g, t in beating] + list(events)
    return checks.History(base + list(marks), evs, 0.1, 1.0, (1, 2, 3))


def test_fenced_writes_from_the_verification_the_promise_and_the_takeover():
    writes = [w("r1", 2, G2, 1, 4.9), w("r2", 2, G2, 1, 4.95), w("r1", 2, G2, 1, 5.1)]
    fenced = checks.LogEvent(5.0, 1, "fenced", 2, G2, "deadline")
    assert checks.fenced_writes(writes, history(events=[fenced]))[0].startswith("FENCED-WRITE: node 2")
    assert checks.fenced_writes(writes[:2], history(events=[fenced])) == []
    promise = checks.LogEvent(5.0, 2, "read-only", 2)  # its own line: the incarnation beating then
    assert "READ_ONLY" in checks.fenced_writes(writes, history(events=[promise]))[0]
    took_r2 = checks.LogEvent(5.0, 3, "takeover", 2, G2, "r2")  # only r2 changed hands
    assert checks.fenced_writes(writes, history(events=[took_r2])) == []
    took_r1 = checks.LogEvent(5.0, 3, "takeover", 2, G2, "r1")
    assert "took r1 over" in checks.fenced_writes(writes, history(events=[took_r1]))[0]
    other_gen = checks.LogEvent(5.0, 1, "fenced", 2, 0x99, "deadline")  # an older incarnation of node 2
    assert checks.fenced_writes(writes, history(events=[other_gen])) == []


def test_a_scsi_pr_fence_stops_the_lun_writes_only():
    """FD13: a victim fenced by scsi-pr may run on; its landed LUN writes (iSCSI lines: a done
    time) sent after the verified fence are PR-FENCED-WRITE, its other resources' writes are not
    FENCED-WRITE on that verdict (their takeover still is)."""
    fenced = checks.LogEvent(5.0, 3, "fenced", 2, G2, "scsi-pr")
    before = [w("lun", 2, G2, 1, 4.90, 4.91), w("lun", 2, G2, 1, 4.99, 5.4)]  # sent before: may land late
    assert checks.pr_fenced_writes(before, history(events=[fenced])) == []
    landed = before + [w("lun", 2, G2, 1, 5.05, 5.06)]
    [v] = checks.pr_fenced_writes(landed, history(events=[fenced]))
    assert v.startswith("PR-FENCED-WRITE: node 2 (generation 0x22) landed 1 write(s) on lun") and "by scsi-pr" in v
    assert checks.pr_fenced_writes(landed, history(events=[checks.LogEvent(5.0, 3, "fenced", 2, 0x99, "scsi-pr")])) \
        == []  # another incarnation
    assert checks.pr_fenced_writes([w("r1", 2, G2, 1, 5.1)], history(events=[fenced])) == []  # not through iSCSI
    assert checks.fenced_writes(landed + [w("r1", 2, G2, 1, 5.1)], history(events=[fenced])) == []
    took_r1 = checks.LogEvent(5.0, 3, "takeover", 2, G2, "r1")
    assert "took r1 over" in checks.fenced_writes([w("r1", 2, G2, 1, 5.1)], history(events=[fenced, took_r1]))[0]
    deadline = checks.LogEvent(5.0, 3, "fenced", 2, G2, "deadline")  # covers every resource, the LUN's too
    assert checks.fenced_writes(landed, history(events=[deadline]))[0].startswith("FENCED-WRITE: node 2 (generation"
                                                                                   " 0x22) wrote lun 1 time(s)")
    assert checks.judge(landed, history(events=[fenced]))[0].startswith("PR-FENCED-WRITE")


def test_iscsi_writes_are_ordered_as_sent_and_read_with_their_refusals(tmp_path):
    # node 2's last write came back GOOD after node 3's first (a slow answer): sent before it, it
    # landed before it (each write lands between its sending and its line)
    late_line = [w("lun", 2, G2, 1, 1.0, 1.01), w("lun", 3, G3, 2, 2.0, 2.01), w("lun", 2, G2, 1, 1.5, 2.5)]
    assert checks.one_writer(late_line) == []
    sent_after = late_line + [w("lun", 2, G2, 1, 2.6, 2.61)]
    assert [v.split(":")[0] for v in checks.one_writer(sent_after)] == ["ONE-WRITER"]
    audit = tmp_path / "audit.log"
    audit.write_text("r1 1 0x11 1 1000000000\nlun 1 0x11 1 1100000000 1200000000\nlun 1 0x11 1 13000")
    assert checks.read_audit(str(audit)) == [w("r1", 1, 0x11, 1, 1.0), w("lun", 1, 0x11, 1, 1.1, 1.2)]  # torn: none
    refused = tmp_path / "refused.log"
    refused.write_text("lun 2 0x22 3 5000000000 REFUSED iscsi://x: WRITE(10): RESERVATION CONFLICT\n"
                       "lun 2 0x22 3 5100000000 UNKNOWN iscsi://x: WRITE(10): no answer\n")
    assert checks.read_refused(str(refused)) == [("lun", 2, 0x22, 5.0, "REFUSED"), ("lun", 2, 0x22, 5.1, "UNKNOWN")]
    assert checks.read_refused(str(tmp_path / "none.log")) == []


def test_the_lun_blocks_show_a_write_that_landed_late_or_unanswered(tmp_path):
    ns = 10 ** 9
    def block(node, gen, t_ns):
        return f"lun {node} {gen:#x} 1 {t_ns}\n".encode().ljust(checks.BLOCK, b"\0")
    t_a, t_b = 5 * ns, 5 * ns + checks.LUN_SLOTS * checks.LUN_SLOT_NS  # the same LBA, 400 ms apart
    assert checks.lun_lba(t_a) == checks.lun_lba(t_b) != checks.lun_lba(t_a + checks.LUN_SLOT_NS)
    img = tmp_path / "lun.img"
    img.write_bytes(b"".join(block(2, G2, t_a) if k == checks.lun_lba(t_a) else bytes(checks.BLOCK)
                             for k in range(checks.LUN_SLOTS)) + bytes(4096))
    [found] = checks.read_lun(str(img), "lun")
    assert (found.node, found.generation, found.t) == (2, G2, 5.0)
    b_landed = [w("lun", 3, G3, 2, t_b / ns, t_b / ns + 0.01)]  # node 3 wrote that block after node 2's write
    [v] = checks.lun_last_writes(b_landed, [found])  # ... yet node 2's is there: it landed after it
    assert v.startswith(f"LUN-LAST-WRITE: lun: LBA {checks.lun_lba(t_a)} holds node 2's")
    assert checks.lun_last_writes([w("lun", 2, G2, 1, t_b / ns, t_b / ns + 0.01)], [found]) == []  # its own
    assert checks.lun_last_writes([w("lun", 3, G3, 2, 4.0, 4.01)], [found]) == []  # an older one
    # found on the LUN but never answered (its consumer killed): sent after a scsi-pr fence, it counts
    fenced = checks.LogEvent(4.9, 3, "fenced", 2, G2, "scsi-pr")
    assert checks.pr_fenced_writes([], history(events=[fenced]), [found])[0].startswith("PR-FENCED-WRITE: node 2")
    assert "LUN-LAST-WRITE" in " ".join(checks.judge(b_landed, history(), [found]))


def test_a_death_or_a_victim_needs_silence_where_the_observer_looks():
    death = checks.LogEvent(5.0, 1, "death", 2, G2)
    victim = checks.LogEvent(5.0, 1, "victim", 2, G2)
    assert checks.false_deaths(history(events=[death]))[0].startswith("FALSE-DEATH")
    assert checks.false_deaths(history(events=[victim]))[0].startswith("FALSE-FENCE")
    frozen = [(3.0, 2, "stopped", True)]
    assert checks.false_deaths(history(frozen, [death, victim])) == []
    killed = [(3.5, 2, "daemon", None)]
    assert checks.false_deaths(history(killed, [death])) == []
    cut_off = [(3.0, 2, "disk", "eio"), (3.0, 2, "link", False)]
    assert checks.false_deaths(history(cut_off, [death])) == []
    disk_only = [(3.0, 2, "disk", "hang")]  # its datagrams still arrive
    assert checks.false_deaths(history(disk_only, [death]))
    observer_cut = [(3.0, 2, "disk", "hang"), (3.0, 1, "link", False)]  # ... not at node 1
    assert checks.false_deaths(history(observer_cut, [death])) == []
    slow = [(3.0, 2, "disk", "slow:400"), (3.0, 2, "link", False)]  # a slow disk still lands beats
    assert checks.false_deaths(history(slow, [death]))
    late = [(4.6, 2, "stopped", True)]  # silent only for the last 0.4 s: too short
    assert checks.false_deaths(history(late, [death]))


def test_a_victim_is_named_only_by_a_node_that_saw_a_majority():
    victim = checks.LogEvent(5.0, 1, "victim", 2, G2)
    both_gone = [(1.0, 2, "daemon", None), (1.0, 3, "daemon", None)]
    assert checks.fence_quorate(history(both_gone, [victim]))[0].startswith("FENCE-QUORATE")
    one_gone = [(1.0, 2, "daemon", None)]
    assert checks.fence_quorate(history(one_gone, [victim])) == []
    lately = [(1.0, 2, "daemon", None), (4.5, 3, "daemon", None)]  # node 3 seen within the window
    assert checks.fence_quorate(history(lately, [victim])) == []


def test_log_lines_are_read_as_the_daemon_writes_them(tmp_path):
    lines = [
        "2026-11-30 22:34:04,498 diskhb[4] INFO slot 2 claimed on every disk region: beating as generation 0x22",
        "2026-11-30 22:34:05,000 diskhb[4] ERROR node n3 (id 3): alive -> dead on lan (age 1.00 s): silent"
        " [generation 0x33]",
        "2026-11-30 22:34:05,001 diskhb[4] ERROR node 3 (generation 0x33) must be fenced: dead on every region",
        "2026-11-30 22:34:05,002 diskhb[4] WARNING fencing node 3 (generation 0x33), attempt 1: pill (dead)",
        "2026-11-30 22:34:05,012 diskhb[4] WARNING fencing node 3 (generation 0x33), attempt 1 by pill: pending in"
        " 10 ms: pill written on disk (seq 1); waiting for node 3 to fence itself",
        "2026-11-30 22:34:07,100 diskhb[4] WARNING fencing node 3 (generation 0x33), attempt 1 by deadline: fenced:"
        " its self-fence deadline passed",
        "2026-11-30 22:34:07,200 diskhb[4] INFO MMP resource 'r1' acquired: epoch 2 on /x block 0 (taken over from"
        " n3 (node 3, generation 0x33): its daemon stopped writing (fenced, or read-only))",
        "2026-11-30 22:34:08,000 diskhb[4] CRITICAL SELF-FENCED (quorum-lost): lost",
        "2026-11-30 22:34:08,001 diskhb[4] CRITICAL self-fenced: every guarded resource stopped and no write of ours"
        " to guarded storage can still land: READ_ONLY published",
        "  a continuation line without a time",
    ]
    path = tmp_path / "n2.log"
    path.write_text("\n".join(lines) + "\n")
    evs = checks.parse_log(str(path), 2, 0.0)
    assert [(e.kind, e.subject, e.generation, e.detail) for e in evs] == [
        ("beating", 2, 0x22, ""), ("death", 3, 0x33, ""), ("victim", 3, 0x33, "dead on every region"),
        ("pill", 3, 0x33, ""), ("fenced", 3, 0x33, "deadline"), ("takeover", 3, 0x33, "r1"),
        ("self-fenced", 2, 0, "quorum-lost"), ("read-only", 2, 0, "")]
    assert evs[1].t - evs[0].t == pytest.approx(0.502)


def _cts(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cts", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _needs():
    from cluster import faultdisk_missing as _faultdisk_missing
    from tools import netns

    reason = netns.available() or (f"needs {m}" if (m := _faultdisk_missing()) else None)
    if reason:
        pytest.skip(reason)
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")


@pytest.mark.root
@pytest.mark.slow
def test_a_short_sample_of_real_schedules_holds_every_rule(tmp_path):
    """CI's sample: two schedules that fence and take over (node 1, the first holder, killed;
    isolated). The benchmark run of >= 200 is in BENCHMARKS.md."""
    _needs()
    r = _cts("--schedules", "2", "--seed", str(SAMPLE_SEED), "--workdir", str(tmp_path / "cts"), "--net", "11",
             timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 schedule(s), 0 with violations" in r.stdout, r.stdout
    assert "fences verified" in r.stdout or "takeovers (log)" in r.stdout, r.stdout


@pytest.mark.root
@pytest.mark.slow
def test_a_cluster_broken_on_purpose_is_caught(tmp_path):
    """Nothing stops node 1's consumers when it fences itself (no loss action, no enforcer) and
    its watchdog resets nobody: node 1, isolated while holding, keeps writing after its
    READ_ONLY promise and after another node took its resources over."""
    _needs()
    r = _cts("--schedules", "1", "--seed", "6", "--break", "no-loss-action,no-watchdog-reset",
             "--workdir", str(tmp_path / "cts"), "--net", "12", timeout=300)
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-2000:]
    assert "isolate   node 1" in r.stdout and "replay: python -m tools.cts --schedules 1 --seed 6" in r.stdout
    assert "ONE-WRITER: r" in r.stdout and "FENCED-WRITE: node 1" in r.stdout, r.stdout
    assert os.path.exists(tmp_path / "cts" / "seed6" / "audit.log")  # kept for the post-mortem


@pytest.mark.root
@pytest.mark.slow
def test_a_short_sample_with_scsi_pr_holds_every_rule(tmp_path):
    """--scsi-pr: node 1, the first holder, isolated (it fences itself); then frozen, and nodes 2
    and 1 reset (fenced by scsi-pr: the LUN resource taken over at once, FD13)."""
    _needs_pr()
    r = _cts("--schedules", "2", "--seed", str(PR_SAMPLE_SEED), "--scsi-pr", "--workdir", str(tmp_path / "cts"),
             "--net", "41", timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "resources r1, r2, lun (scsi-pr)" in r.stdout and "2 schedule(s), 0 with violations" in r.stdout, r.stdout
    assert "fences verified (scsi-pr)" in r.stdout and "writes landed on the LUN" in r.stdout, r.stdout


@pytest.mark.root
@pytest.mark.slow
def test_the_lun_fence_holds_where_the_loss_action_and_the_watchdog_do_not(tmp_path):
    """The cluster broken on purpose (nothing stops a consumer, watchdogs reset nobody), node 1's
    daemon frozen for 3 s while it holds everything: r1 and r2 are caught written twice, while on
    the LUN its consumer's writes are refused once a peer preempted its key, and none lands
    after that fence."""
    _needs_pr()
    r = _cts("--schedules", "1", "--seed", "1", "--scsi-pr", "--break", "no-loss-action,no-watchdog-reset",
             "--workdir", str(tmp_path / "cts"), "--net", "42", timeout=300)
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-2000:]
    assert "freeze    node 1 for 3 s" in r.stdout and "ONE-WRITER: r1" in r.stdout, r.stdout
    assert "LUN writes refused (reservation conflict)" in r.stdout and "fences verified (scsi-pr)" in r.stdout, r.stdout
    for rule in ("PR-FENCED-WRITE", "LUN-LAST-WRITE", "ONE-WRITER: lun", "EPOCHS: lun", "wrote lun", "TAKEN-OVER: lun"):
        assert rule not in r.stdout, r.stdout


def _needs_pr():
    _needs()
    from tools import tgt

    why = tgt.pr_missing()
    if why:
        pytest.skip(why)


SAMPLE_SEED = 14  # seed 14: reset node 1 (the holder); seed 15: link cut on node 2, then node 1 killed
PR_SAMPLE_SEED = 10  # seed 10: node 1 isolated for 3 s; seed 11: node 1 frozen, nodes 2 and 1 reset, node 3 restarted
