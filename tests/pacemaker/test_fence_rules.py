"""fence_diskhb's decisions (diskhb.pacemaker.fence_rules): the stdin and getopt options, the
plug -> node mapping, ON/OFF (PW1-PW3) and when an ordered fence counts as done (PW4). No I/O."""

from __future__ import annotations

import getopt
import xml.etree.ElementTree as ET

import pytest

from diskhb.pacemaker import fence_rules as fr

G2, G3 = 0x1111, 0x3333


def snapshot(n2_flags=("active",), n2_state="alive", n2_gen=G2, fencing=()) -> dict:
    return {"source": "daemon", "node": {"id": 1}, "fencing": list(fencing), "nodes": [
        {"id": 1, "name": "oss1", "generation": 0x9999, "state": "alive", "flags": ["active"], "self": True},
        {"id": 2, "name": "oss2", "generation": n2_gen, "state": n2_state, "flags": list(n2_flags)},
        {"id": 3, "name": "oss3", "generation": f"{G3:#x}", "state": "dead", "flags": ["active"]},  # hex: also read
        {"id": 4, "name": "", "generation": 0, "state": "unknown", "flags": []},
    ]}


def row(node=2, gen=G2, fenced=False, in_flight=True, last="", pending="") -> dict:
    return {"node": node, "generation": f"{gen:#x}", "fenced": fenced, "in_flight": in_flight, "last": last,
            "pending": pending, "manual": True, "attempts": 1}


def test_stdin_protocol():
    opts, warnings = fr.parse_stdin('# Pacemaker\naction=off\nport="oss2"\nnodename=oss1\npower-timeout=5\n'
                                    "verbose=yes\nbogus=1\n\nquiet=maybe\n")
    assert opts == {"action": "off", "plug": "oss2", "power_timeout": "5", "verbose": "1"}
    assert len(warnings) == 2 and "bogus" in warnings[0] and "quiet" in warnings[1]
    req = fr.check(opts)
    assert (req.action, req.plug, req.power_timeout_s, req.verbose, req.config) == ("off", "oss2", 5, True,
                                                                                   fr.DEFAULT_CONFIG)


def test_command_line():
    short, long = fr.getopt_spec()
    pairs, rest = getopt.gnu_getopt(["-o", "status", "-n", "3", "--config=/x.toml", "-v", "-C", ";"], short, long)
    assert not rest
    req = fr.check(fr.from_getopt(pairs))
    assert (req.action, req.plug, req.config, req.verbose, req.separator) == ("status", "3", "/x.toml", True, ";")


@pytest.mark.parametrize("opts,text", [
    ({"action": "destroy"}, "unknown action"),
    ({"action": "off"}, "needs the node"),
    ({"action": "reboot", "plug": "   "}, "plug"),
    ({"action": "off", "plug": "a b"}, "plug"),
    ({"action": "off", "plug": "a,b"}, "plug"),
    ({"action": "off", "plug": "2", "power_timeout": "0"}, "power_timeout"),
    ({"action": "off", "plug": "2", "power_timeout": "ten"}, "power_timeout"),
    ({"action": "off", "plug": "2", "delay": "-1"}, "delay"),
    ({"action": "list", "separator": "::"}, "separator"),
])
def test_bad_input_is_one_line(opts, text):
    with pytest.raises(fr.UsageError) as e:
        fr.check(opts)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_actions_that_need_no_plug():
    for a in ("list", "list-status", "monitor", "metadata", "validate-all", "meta-data"):
        assert fr.check({"action": a}).plug is None
    assert fr.check({"action": "meta-data"}).action == "metadata"
    assert fr.check({"plug": "2"}).action == "reboot"  # fence-agents' default action


def test_metadata_is_the_fence_agents_format():
    doc = ET.fromstring(fr.metadata_xml().split("\n", 1)[1])
    assert doc.tag == "resource-agent" and doc.get("name") == "fence_diskhb"
    params = {p.get("name"): p for p in doc.find("parameters")}
    assert {"action", "plug", "port", "config", "power_timeout", "delay"} <= set(params)
    assert params["port"].get("deprecated") == "1" and params["plug"].get("obsoletes") == "port"
    assert params["config"].find("content").get("default") == fr.DEFAULT_CONFIG
    assert all(p.find("getopt").get("mixed") for p in params.values())
    actions = [a.get("name") for a in doc.find("actions")]
    assert set(actions) == set(fr.ACTIONS) and doc.find("actions")[0].get("automatic") == "0"


def test_plug_by_name_or_id_among_nodes_seen():
    s = snapshot()
    assert fr.resolve("oss2", s).id == 2 and fr.resolve("3", s).generation == G3
    for bad in ("oss9", "9", "4"):  # never seen: no incarnation to fence (PW3)
        with pytest.raises(fr.UsageError, match="no such node has been seen"):
            fr.resolve(bad, s)
    s["nodes"][2]["name"] = "oss2"
    with pytest.raises(fr.UsageError, match="several nodes"):
        fr.resolve("oss2", s)


def test_pw1_off_only_when_verified():
    assert fr.power(fr.resolve("oss2", snapshot()), snapshot())[0] == "on"
    s = snapshot(fencing=[row(fenced=True, last="fenced itself")])
    assert fr.power(fr.resolve("2", s), s)[0] == "off"
    s = snapshot(n2_flags=("active", "self_fenced", "read_only"))  # FD8, whoever ordered it
    assert fr.power(fr.resolve("2", s), s)[0] == "off"
    s = snapshot(n2_flags=("active", "self_fenced"))  # its loss actions still running
    assert fr.power(fr.resolve("2", s), s)[0] == "on"
    s = snapshot(fencing=[row(gen=0x7777, fenced=True)])  # an earlier incarnation's fence: not this one
    assert fr.power(fr.resolve("2", s), s)[0] == "on"


def test_pw2_dead_but_unverified_is_on():
    s = snapshot(fencing=[row(node=3, gen=G3, pending="pill written")])
    state, why = fr.power(fr.resolve("oss3", s), s)
    assert state == "on" and "may still be running" in why
    assert fr.power(fr.resolve("oss1", s), s)[0] == "on"  # ourselves


def test_pw4_progress_of_an_ordered_fence():
    p = fr.fence_progress(2, G2, snapshot(fencing=[row(pending="pill: waiting")]))
    assert not p.done and not p.failed and "waiting" in p.text
    assert fr.fence_progress(2, G2, snapshot(fencing=[row(fenced=True, in_flight=False)])).done
    assert fr.fence_progress(2, G2, snapshot(n2_flags=("self_fenced", "read_only"), fencing=[row()])).done
    p = fr.fence_progress(2, G2, snapshot(fencing=[row(in_flight=False, last="attempt 1 failed (none): no outcome")]))
    assert p.failed and "failed" in p.text
    p = fr.fence_progress(2, G2, snapshot(n2_gen=0x5555, fencing=[]))  # restarted: not proof of anything
    assert p.failed and not p.done and "restarted" in p.text
    assert fr.fence_progress(2, G2, snapshot()).failed  # the daemon forgot the order


def test_list_names_every_node_this_daemon_could_fence():
    s = snapshot(fencing=[row(fenced=True)])
    assert fr.list_lines(s, ",", False) == ["oss2,2", "oss3,3"]
    assert fr.list_lines(s, ";", True) == ["oss2;2;OFF", "oss3;3;ON"]
