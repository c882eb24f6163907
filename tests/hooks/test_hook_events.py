"""Core events -> hook events: every kind the issue lists maps, under names that never change."""

from __future__ import annotations

import json

import pytest

from diskhb.core.fencing import FenceOutcome, FencePending, VictimBack, VictimNamed
from diskhb.core.liveness import NodeRestarted, NodeStateChanged, RegionNodeChanged
from diskhb.core.node import BeatDue, MmpEvent
from diskhb.core.quorum import QuorumChanged
from diskhb.core.region_health import RegionHealthChanged
from diskhb.core.self_fence import SelfFenced
from diskhb.core.types import NodeState
from diskhb.hooks.events import (
    COMMON_FIELDS, EVENT_FIELDS, EVENTS, Context, EventMapper, HookEvent, environment, iso8601,
)

A, D, L, U = NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT, NodeState.UNKNOWN
GEN = 6894389468678002730  # rounded to ...3000 by a JSON consumer that reads it as a double
CTX = Context("c1", "oss1", 1, 0x1234)


def changed(node_id, old, new, generation=GEN, name="oss2"):
    return NodeStateChanged(node_id, name, old, new, "disk:/r", 2100, "no heartbeat advance", generation)


def test_names_are_the_stable_interface():
    # Scripts and `events = [...]` match on these: only ever add to the list.
    assert EVENTS == (
        "node-dead", "node-back", "node-left", "node-restarted", "region-lost", "region-regained",
        "quorum-gained", "quorum-lost", "fence-needed", "node-fenced", "fence-failed", "self-fenced",
        "mmp-acquired", "mmp-taken-over", "mmp-lost", "mmp-released")


def test_every_listed_event_kind_maps():
    mp = EventMapper()
    seq = [
        (changed(2, U, A), None),  # every peer at our start: no news
        (changed(2, A, D), "node-dead"),
        (changed(2, D, A), "node-back"),
        (changed(2, A, L), "node-left"),
        (changed(2, L, A), "node-back"),
        (NodeRestarted(2, "oss2", "disk:/r", GEN, GEN + 1), "node-restarted"),
        (RegionHealthChanged("disk:/r", True, ""), None),  # the first good write at start
        (RegionHealthChanged("disk:/r", False, "own write late"), "region-lost"),
        (RegionHealthChanged("disk:/r", True, ""), "region-regained"),
        (QuorumChanged(False, 1, 3, (1,), "1 of 3 votes"), None),  # not reached yet: no loss
        (QuorumChanged(True, 2, 3, (1, 2), "2 of 3 votes"), "quorum-gained"),
        (QuorumChanged(False, 1, 3, (1,), "1 of 3 votes"), "quorum-lost"),
        (VictimNamed(2, GEN, 3, "dead"), "fence-needed"),
        (FencePending(2, GEN, 1, "pill", "pill written"), None),
        (FenceOutcome(2, GEN, 1, True, "pill", "fenced itself"), "node-fenced"),
        (FenceOutcome(2, GEN, 2, False, "pill", "no answer"), "fence-failed"),
        (VictimBack(2, GEN, "alive again"), None),
        (SelfFenced("pill", "fence message", 5000), "self-fenced"),
        (MmpEvent("ost0", "acquired", 7, "on /dev/x block 0 (ballot won)"), "mmp-acquired"),
        (MmpEvent("ost0", "acquired", 8, "on /dev/x block 0 (taken over from node 2 (gen 0x1): unchanged)"),
         "mmp-taken-over"),
        (MmpEvent("ost0", "lost", 8, "taken over by node 3"), "mmp-lost"),
        (MmpEvent("ost0", "released", 8, "on /dev/x block 0"), "mmp-released"),
        (MmpEvent("ost0", "refused", 0, "held by node 2"), None),
        (RegionNodeChanged(2, "oss2", "disk:/r", A, D, 2100), None),  # one region's view: logged, not paged
        (BeatDue(3), None),
    ]
    got = [(mp.map(ev) or (None,))[0] for ev, _ in seq]
    assert got == [want for _, want in seq]
    assert {w for _, w in seq if w} == set(EVENTS)


def test_node_dead_fields_and_a_generation_as_hex():
    name, fields = EventMapper().map(changed(2, A, D))
    assert name == "node-dead"
    assert fields == {"subject_node": "oss2", "subject_node_id": 2, "generation": "0x5fadcab197bf182a",
                      "state": "dead", "previous_state": "alive", "region": "disk:/r", "age_ms": 2100,
                      "reason": "no heartbeat advance"}
    assert int(fields["generation"], 16) == GEN


def test_a_victim_carries_the_name_learnt_from_its_node_events():
    mp = EventMapper()
    assert mp.map(VictimNamed(2, GEN, 3, "dead"))[1]["subject_node"] is None  # never heard of by name
    mp.map(changed(2, A, D))
    _, f = mp.map(FenceOutcome(2, GEN, 1, True, "pill", "fenced itself"))
    assert (f["subject_node"], f["subject_node_id"], f["method"], f["attempt"]) == ("oss2", 2, "pill", 1)


def test_payload_has_every_field_and_round_trips_through_json():
    name, fields = EventMapper().map(changed(2, A, D))
    payload = HookEvent(name, 7, 1_700_000_000_123, fields).payload(CTX)
    assert list(payload) == list(COMMON_FIELDS) + list(EVENT_FIELDS)
    assert json.loads(json.dumps(payload)) == payload
    assert (payload["schema"], payload["event"], payload["seq"], payload["cluster"], payload["node"],
            payload["node_id"], payload["node_generation"]) == (1, "node-dead", 7, "c1", "oss1", 1, "0x1234")
    assert payload["time"] == "2023-11-14T22:13:20.123Z" == iso8601(payload["time_ms"])
    assert payload["resource"] is None and payload["members"] is None


def test_environment_names_every_field_that_applies():
    name, fields = EventMapper().map(QuorumChanged(True, 2, 3, (1, 2), "2 of 3\0 votes"))
    env = environment(HookEvent(name, 1, 0, fields).payload(CTX))
    assert env["DISKHB_EVENT"] == "quorum-gained" and env["DISKHB_MEMBERS"] == "1,2"
    assert (env["DISKHB_NODE"], env["DISKHB_NODE_ID"], env["DISKHB_VOTES"]) == ("oss1", "1", "2")
    assert env["DISKHB_REASON"] == "2 of 3 votes"  # execve refuses a NUL
    assert "DISKHB_RESOURCE" not in env and "DISKHB_SUBJECT_NODE_ID" not in env  # null: unset


def test_long_reasons_are_cut():
    _, f = EventMapper().map(SelfFenced("lease", "x" * 5000, 1))
    assert len(f["reason"]) == 1024 and f["cause"] == "lease"


@pytest.mark.parametrize("event", EVENTS)
def test_config_accepts_every_name(event):
    from diskhb.config import parse_config

    cfg = parse_config({"node": {"name": "a", "id": 1}, "region": [{"type": "disk", "path": "/x"}],
                        "hooks": {"commands": ["/bin/true"], "events": [event]}})
    assert cfg.hooks.events == (event,)


def test_the_readme_documents_every_event_field_and_variable():
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("## Notification hooks"):readme.index("## Layout")]
    for name in EVENTS:
        assert f"`{name}`" in section, name
    for field in COMMON_FIELDS + EVENT_FIELDS:
        assert f'"{field}":' in section and f"`DISKHB_{field.upper()}`" in section, field
