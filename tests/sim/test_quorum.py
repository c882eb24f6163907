"""The simulator's quorum profiles (tools.sim.world.QUORUM: [quorum], the disk pill, self-fencing,
watchdogs) and their invariants (tools.sim.invariants: SF-NO-WRITE, SF-READ-ONLY, FENCE-QUORATE):
random seeds of each profile pass; scripted runs show a pill fencing a holder whose block is then
taken over at once (FP0), and each invariant failing when the node core is broken on purpose.
"""

from __future__ import annotations

import dataclasses

import pytest

from diskhb.core import node as core
from diskhb.core.fencing import Fencing
from diskhb.mmp import guard as gd
from diskhb.mmp.ledger import SectorLedger
from tools.sim import world as W
from tools.sim.schedules import Script, calm
from tools.sim.world import HELD, QUORUM, Fate, Rng, World

RUN_S = 20


def quorate_calm(**kw) -> W.Profile:
    """No random faults (schedules.calm); 500 ms beats, dead 5 s (F1's bound 5 s); every daemon
    with a [quorum] of the three and self-fencing; consumers hold a minute."""
    return dataclasses.replace(calm(5000), **{"interval_ms": 500, "resource_intervals_ms": (500, 500), "net": True,
                                              "quorum": True, "node_work_ms": (60_000, 60_000), "watchdog_s": 2,
                                              **kw})


@dataclasses.dataclass
class Scenario(Script):
    """Three daemons; `steps`: (at ms, node index, what, argument) with what "acquire" (a client
    asks for r0 with that --wait), "fence" (an operator's `diskhb fence NODE` to that daemon) or
    "freeze" (for that many ms)."""
    steps: tuple = ()
    kw: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.nodes, self.seconds = 3, RUN_S

    @property
    def profile(self) -> W.Profile:
        return quorate_calm(**self.kw)

    def setup(self, w: World) -> None:
        for at, i, what, arg in self.steps:
            n = w.nodes[i]
            w.at(at, {"acquire": lambda n=n, arg=arg: n.acquire("r0", arg),
                      "fence": lambda n=n, arg=arg: n.fence_request(arg),
                      "freeze": lambda n=n, arg=arg: n.freeze(arg)}[what])


def run(script: Scenario, seed: int = 1) -> World:
    return World(seed, nodes=3, seconds=RUN_S, profile=script.profile, script=script).run()


def lines(w: World, text: str) -> list[int]:
    """When each trace line containing text was logged."""
    return [int(line.split()[0]) for line in w.trace if text in line]


# n1 holds r0; an operator orders n1 fenced on n2; n3 then asks for r0
PILL = ((4000, 0, "acquire", 0), (8000, 1, "fence", 1), (9500, 2, "acquire", 10_000))


# -- random seeds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(QUORUM)))
def test_random_seeds_of_each_quorum_profile_pass(index):
    stats: dict[str, int] = {}
    for seed in (1, 2, 3):
        w = World(seed, profile=QUORUM[index]).run()
        assert w.checker.violation is None, "\n".join([str(w.checker.violation), *list(w.trace)[-40:]])
        for k, v in w.checker.stats.items():
            stats[k] = stats.get(k, 0) + v
    # what the profile is for happened: pills written, nodes fenced themselves and promised
    # READ_ONLY, watchdogs reset nodes
    assert stats.get("pills", 0) and stats.get("read_only_promises", 0) and stats.get("watchdog_resets", 0), stats
    assert sum(v for k, v in stats.items() if k.startswith("self_fence_")), stats


def test_a_quarter_of_the_seeds_run_a_quorum_profile_and_the_others_their_old_one():
    picks = [World.pick_profile(s, Rng(s)) for s in range(2000)]
    share = sum(p.quorum for p in picks) / len(picks)
    assert abs(share - W.QUORUM_SHARE) < 0.03, share
    assert {p for p in picks if p.quorum} == set(QUORUM)
    for s, p in enumerate(picks):  # the draw every seed made before the quorum profiles existed
        if not p.quorum:
            assert p is Rng(s).choice(W.PROFILES[:W.DRAWN])


@pytest.mark.parametrize("seed, digest", [(0, "89d87555c53c65d9"), (1, "148f555ffd6cfa47"),
                                          (2, "b39f03fd22dcd5be")])
def test_old_profiles_keep_their_traces(seed, digest):
    """Trace hashes of seeds that keep an old profile, as they were before the quorum profiles
    (7b310e8). A deliberate change of the old profiles' model updates these; so does a change of
    the core: seed 1's node 1 claims back the block it lost (node core N17) since the CTS."""
    assert not World.pick_profile(seed, Rng(seed)).quorum
    assert World(seed).run().trace_hash == digest


# -- the pill, self-fencing, FP0 -------------------------------------------------------------------------


def test_a_pill_fences_the_holder_and_its_block_is_taken_over_at_once():
    w = run(Scenario(steps=PILL))
    assert w.checker.violation is None, "\n".join([str(w.checker.violation), *w.trace])
    (held,) = lines(w, "n1 holds r0 epoch 1")
    (fenced,) = lines(w, "n1 fences itself (pill)")
    (asked,) = lines(w, "n3 asks for r0")
    (took,) = lines(w, "n3 holds r0 epoch 2")
    assert held < 8000 < fenced < 8000 + 2 * 500  # at n1's next slot read after the pill
    assert w.checker.read_only_at[(1, 1)] < asked  # SELF_FENCED, READ_ONLY promised
    # fast path FP0: at once, not after the classic watch (2 x 500 ms + margin)
    assert w.checker.stats["fp0_takeovers"] == 1 and took - asked < 500
    (reset,) = lines(w, "n1's watchdog resets the node")  # no longer fed: within its 2 s
    assert fenced < reset <= fenced + 2000


def test_sf_no_write_catches_a_guard_that_goes_on_writing(monkeypatch):
    monkeypatch.setattr(gd.Guard, "abandon", lambda self, now_ms, reason: None)  # GD8 broken
    w = run(Scenario(steps=PILL))
    v = w.checker.violation
    assert v is not None and v.rule == "SF-NO-WRITE", v
    assert "n1 (incarnation 1) fenced itself" in v.text


class HeldBump(Scenario):
    """n1 holds r0; its first bump after 7 s is held in the I/O stack, and an operator orders n1
    fenced at once: n1 gives the bump up when it fences itself; the bump lands 100 ms before F1's
    bound (5 s after its issue) and completes after it. READ_ONLY must wait for it (self_fence
    SF5, ledger LG3; the watchdog, 8 s, resets n1 only later). n3 asks for r0 a second after F1's
    bound: taken over at once (FP0)."""

    def __init__(self, **kw):
        super().__init__(steps=((4000, 0, "acquire", 0),), kw={"watchdog_s": 8, **kw})
        self.held: Fate | None = None

    def fate(self, w, actor, req):
        if self.held is None and actor.name == "n1" and req.op == "write" and req.offset == 0 and w.now >= 7000:
            self.held = Fate(complete=HELD, land=HELD)
            w.at(w.now + 1, w.nodes[1].fence_request, 1)
            limit = w.profile.write_land_max_ms
            w.at(w.now + limit - 100, lambda: w.land(self.held, w.now))
            w.at(w.now + limit + 100, lambda: w.complete(self.held, w.now))
            w.at(w.now + limit + 1000, w.nodes[2].acquire, "r0", 10_000)
            return self.held
        return None


def test_read_only_waits_for_a_given_up_write_to_land():
    script = HeldBump()
    w = run(script)
    assert w.checker.violation is None, "\n".join([str(w.checker.violation), *w.trace])
    (fenced,) = lines(w, "n1 fences itself (pill)")
    assert script.held.issue < fenced < script.held.landed_at < w.checker.read_only_at[(1, 1)]
    assert w.checker.stats["fp0_takeovers"] == 1 and lines(w, "n3 holds r0 epoch 2")


def test_sf_read_only_catches_a_promise_made_while_a_write_may_land(monkeypatch):
    monkeypatch.setattr(SectorLedger, "unknown", lambda self, now_ms: [])  # LG3 broken
    w = run(HeldBump())
    v = w.checker.violation
    assert v is not None and v.rule == "SF-READ-ONLY" and "lands after it" in v.text, v


def test_sf_read_only_catches_a_promise_made_while_a_consumer_acts(monkeypatch):
    """A core that promises READ_ONLY before the loss actions finished, and never sets the
    devices read-only (BLKROSET would stop the consumer at once)."""
    # r0 held with 4 s: its loss action may take up to a second (kill grace: a quarter interval)
    w = run(Scenario(steps=PILL, kw={"resource_intervals_ms": (4000, 4000)}))
    assert w.checker.violation is None, "\n".join([str(w.checker.violation), *w.trace])
    (fenced,) = lines(w, "n1 fences itself (pill)")
    (stopped,) = lines(w, "n1 consumer of r0 epoch 1 stops: its loss action ran")
    assert stopped - fenced > 500 and w.checker.read_only_at[(1, 1)] >= stopped  # beats went on meanwhile

    self_fenced = core.NodeCore._self_fenced

    def hurried(self, now_ms, actions):
        held, self.held, self._read_only_asked = self.held, {}, True
        try:
            self_fenced(self, now_ms, actions)
        finally:
            self.held = held

    monkeypatch.setattr(core.NodeCore, "_self_fenced", hurried)
    w = run(Scenario(steps=PILL, kw={"resource_intervals_ms": (4000, 4000)}))
    v = w.checker.violation
    assert v is not None and v.rule == "SF-READ-ONLY" and "while its consumer acts on r0" in v.text, v


# -- FENCE-QUORATE ---------------------------------------------------------------------------------------


def test_a_quorate_node_fences_a_dead_peer():
    w = run(Scenario(steps=((5000, 2, "freeze", 30_000),), kw={"watchdog_s": 0}))
    assert w.checker.violation is None, "\n".join([str(w.checker.violation), *w.trace])
    assert w.checker.stats["fences_ordered"] >= 1 and lines(w, "fences n3")


def test_a_node_alone_fences_nobody():
    w = run(Scenario(steps=((5000, 1, "freeze", 30_000), (5000, 2, "freeze", 30_000)), kw={"watchdog_s": 0}))
    assert w.checker.violation is None, "\n".join([str(w.checker.violation), *w.trace])
    n1 = w.nodes[0].inc.core
    assert w.checker.stats["deaths"] >= 2 and not n1.quorum.last.quorate
    assert w.checker.stats["fences_ordered"] == 0


def test_fence_quorate_catches_a_fence_without_quorum(monkeypatch):
    evaluate = Fencing.evaluate
    monkeypatch.setattr(Fencing, "evaluate",  # FD1 broken: every verdict taken as quorate
                        lambda self, now_ms, quorum, peers, deadlines=None:
                        evaluate(self, now_ms, quorum and dataclasses.replace(quorum, quorate=True), peers,
                                 deadlines))
    w = run(Scenario(steps=((5000, 1, "freeze", 30_000), (5000, 2, "freeze", 30_000)), kw={"watchdog_s": 0}))
    v = w.checker.violation
    assert v is not None and v.rule == "FENCE-QUORATE" and v.text.startswith("n1 orders n"), v


# -- the command line ------------------------------------------------------------------------------------


def test_the_cli_runs_only_the_quorum_seeds_when_asked(capsys):
    from tools.sim.__main__ import main

    assert main(["--seeds", "40", "--quorum-only", "--jobs", "1", "--seconds", "5"]) == 0
    out = capsys.readouterr().out
    want = sum(World.pick_profile(s, Rng(s)).quorum for s in range(40))
    assert 0 < want < 40 and out.startswith(f"{want} schedules, 0 violations,"), out
