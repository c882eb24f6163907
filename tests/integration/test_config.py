"""Config: the documented contract, and one clear line for every mistake."""

import pytest

from diskhb.config import load_config, parse_config
from diskhb.errors import OperatorError

GOOD = """
[node]
name = "node1"
id = 1
[metrics]
listen = "127.0.0.1:9701"
[[region]]
type = "disk"
path = "/dev/disk/by-id/x"
"""


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_issue_contract_parses(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.node.name == "node1" and cfg.node.id == 1
    assert cfg.metrics_listen == "127.0.0.1:9701"
    assert [(r.type, r.path, r.name) for r in cfg.regions] == [("disk", "/dev/disk/by-id/x", "disk:/dev/disk/by-id/x")]


@pytest.mark.parametrize("text,match", [
    (GOOD.replace('name = "node1"', 'nmae = "node1"'), "'node.nmae': unknown key; did you mean 'name'"),
    (GOOD.replace("id = 1", "id = 0"), "'node.id': 0 out of range"),
    (GOOD.replace("id = 1", 'id = "1"'), "'node.id': must be int"),
    (GOOD.replace('type = "disk"', 'type = "dsik"'), "unknown region type"),
    (GOOD.replace('path = "/dev/disk/by-id/x"', 'pth = "x"'), "'region\\[1\\].pth': unknown key"),
    (GOOD.replace("[metrics]", "[metric]"), "'metric': unknown key; did you mean 'metrics'"),
    (GOOD.replace('127.0.0.1:9701', 'nonsense'), "not host:port"),
    ("[node]\nname='a'\nid=1\n", "no \\[\\[region\\]\\] configured"),
    (GOOD + '[[region]]\ntype = "disk"\npath = "/dev/disk/by-id/x"\n', "duplicate region name"),
    (GOOD + '[[region]]\ntype = "net"\nkey = "/k"\n', "needs exactly one of peers, group, broadcast"),
    (GOOD + '[[region]]\ntype = "net"\nkey = "/k"\ngroup = "10.0.0.1"\n', "not a multicast address"),
    (GOOD + '[[region]]\ntype = "serial"\nkey = "/k"\ndevice = "/dev/ttyS0"\nbaud = 1234\n', "unsupported baud"),
    ("[node\n", "not valid TOML"),
])
def test_mistakes_are_one_line_naming_file_and_key(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(OperatorError, match=match) as e:
        load_config(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(path)


def test_missing_file():
    with pytest.raises(OperatorError, match="config file not found"):
        load_config("/nonexistent/diskhb.toml")


def test_mixed_regions():
    cfg = parse_config({
        "node": {"name": "a", "id": 2},
        "region": [
            {"type": "disk", "path": "/x"},
            {"type": "net", "peers": ["127.0.0.1:7000"], "key": "/k", "port": 7001},
            {"type": "serial", "device": "/dev/ttyS1", "key": "/k", "baud": 19200},
        ],
    })
    assert [r.type for r in cfg.regions] == ["disk", "net", "serial"]
    assert cfg.regions[1].peers == ("127.0.0.1:7000",) and cfg.regions[2].baud == 19200


QUORUM = GOOD + """
[quorum]
nodes = [1, 2, 3]
votes = { 3 = 2 }
wait_for_all = true
initdead_ms = 30000
"""


def test_two_node_with_weights_parses(tmp_path):
    text = GOOD + "[quorum]\nnodes = [1, 2]\ntwo_node = true\nweight = { 2 = 10 }\n"
    q = load_config(write(tmp_path, text)).quorum
    assert q.two_node and q.weight(2) == 10 and q.weight(1) == 1 and q.favoured() == 2


def test_quorum_section_parses(tmp_path):
    q = load_config(write(tmp_path, QUORUM)).quorum
    assert sorted(q.votes) == [1, 2, 3] and dict(q.votes) == {1: 1, 2: 1, 3: 2} and q.node_id == 1
    assert q.expected_votes is None and q.wait_for_all and q.initdead_ms == 30000
    assert load_config(write(tmp_path, GOOD)).quorum is None


@pytest.mark.parametrize("change,match", [
    (("nodes = [1, 2, 3]", "nodes = [2, 3]"), "'quorum': this node \\(1\\) is not in the node list"),
    (("nodes = [1, 2, 3]", "nodes = []"), "'quorum.nodes': must list the node ids"),
    (("nodes = [1, 2, 3]", "nodes = [1, 2, 2]"), "'quorum.nodes': node ids listed twice: \\[2\\]"),
    (("nodes = [1, 2, 3]", 'nodes = ["a"]'), "'quorum.nodes': must list the node ids"),
    (("votes = { 3 = 2 }", "votes = { 4 = 2 }"), "'quorum.votes.4': is not a node id listed"),
    (("votes = { 3 = 2 }", "votes = { 3 = 300 }"), "'quorum': node 3: votes 300 is not in 0..255"),
    (("votes = { 3 = 2 }", 'votes = { 3 = "x" }'), "'quorum.votes.3': must be an integer"),
    (("initdead_ms = 30000", "initdead_ms = 30000\nexpected_votes = 3"), "'quorum': expected_votes 3 is less than"),
    (("initdead_ms = 30000", "initdead_ms = 30000\ntwo_node = true"), "'quorum': two_node = true needs exactly"),
    (("initdead_ms = 30000", "initdead_ms = 30000\nweight = { 1 = 5 }"), "'quorum.weight': only decides"),
    (("initdead_ms = 30000", "initdead_ms = 30000\ntwo_node = true\nweight = { 7 = 5 }"),
     "'quorum.weight.7': is not a node id listed"),
])
def test_quorum_mistakes_are_one_line(tmp_path, change, match):
    with pytest.raises(OperatorError, match=match) as e:
        load_config(write(tmp_path, QUORUM.replace(*change)))
    assert "\n" not in str(e.value)


WATCHDOG = GOOD + """
[watchdog]
device = "/dev/watchdog"
timeout_s = 15
"""


def test_watchdog_section_parses(tmp_path):
    w = load_config(write(tmp_path, WATCHDOG)).watchdog
    assert (w.device, w.timeout_s) == ("/dev/watchdog", 15)
    assert load_config(write(tmp_path, WATCHDOG.replace("timeout_s = 15\n", ""))).watchdog.timeout_s == 10
    assert load_config(write(tmp_path, GOOD)).watchdog is None


@pytest.mark.parametrize("change,match", [
    (('device = "/dev/watchdog"\n', ""), "'watchdog.device'"),
    (('device = "/dev/watchdog"', 'device = ""'), "'watchdog.device': is empty"),
    (("timeout_s = 15", "timeout_s = 0"), "'watchdog.timeout_s': 0 is not in 1..3600"),
    (("timeout_s = 15", 'timeout_s = "15"'), "'watchdog.timeout_s'"),
    (("timeout_s = 15", "timeout = 15"), "watchdog.timeout"),
])
def test_watchdog_mistakes_are_one_line(tmp_path, change, match):
    with pytest.raises(OperatorError, match=match) as e:
        load_config(write(tmp_path, WATCHDOG.replace(*change)))
    assert "\n" not in str(e.value)


UUID = "4f37125d-2ed9-4df7-96b0-22e12bde87d4"


def test_a_region_by_uuid_parses_canonical(tmp_path):
    text = GOOD.replace('path = "/dev/disk/by-id/x"', f'path = "uuid:{UUID.upper()}"')
    text += f'[[resource]]\nname = "ost0"\nregion = "uuid:{UUID.replace("-", "")}"\n'
    cfg = load_config(write(tmp_path, text))
    assert [(r.path, r.name) for r in cfg.regions] == [(f"uuid:{UUID}", f"disk:uuid:{UUID}")]
    assert cfg.resources[0].region == f"uuid:{UUID}"  # matches the region's own spelling


@pytest.mark.parametrize("path,match", [
    ("uuid:xyz", "'region\\[1\\].path': 'uuid:xyz' is not uuid:<region uuid>; use uuid:<the uuid 'diskhb format'"
                 " printed> \\('diskhb scan' lists"),
    ("uuid:", "is not uuid:<region uuid>"),
    (f"UUID={UUID}", f"fstab's UUID= is not a path here; write \"uuid:{UUID}\""),
])
def test_a_bad_uuid_path_is_one_line(tmp_path, path, match):
    with pytest.raises(OperatorError, match=match) as e:
        load_config(write(tmp_path, GOOD.replace("/dev/disk/by-id/x", path)))
    assert "\n" not in str(e.value)


def test_a_resource_naming_a_bad_uuid_is_one_line(tmp_path):
    with pytest.raises(OperatorError, match="'resource\\[1\\].region': 'uuid:1234' is not uuid:<region uuid>"):
        load_config(write(tmp_path, GOOD + '[[resource]]\nname = "ost0"\nregion = "uuid:1234"\n'))


HOOKS = GOOD + """
[hooks]
dir = "/etc/diskhb/hooks.d"
commands = ["/usr/local/sbin/page-oncall"]
timeout_ms = 5000
concurrency = 2
events = ["node-dead", "mmp-lost"]
"""


def test_hooks_section_parses(tmp_path):
    h = load_config(write(tmp_path, HOOKS)).hooks
    assert (h.dir, h.commands, h.timeout_ms, h.concurrency, h.events) == (
        "/etc/diskhb/hooks.d", ("/usr/local/sbin/page-oncall",), 5000, 2, ("node-dead", "mmp-lost"))
    h = load_config(write(tmp_path, GOOD + '[hooks]\ndir = "/etc/diskhb/hooks.d/"\n')).hooks
    assert (h.dir, h.commands, h.timeout_ms, h.concurrency, h.events) == ("/etc/diskhb/hooks.d", (), 10000, 4, None)
    assert load_config(write(tmp_path, GOOD)).hooks is None


@pytest.mark.parametrize("change,match", [
    (("timeout_ms = 5000", "timeout_ms = 50"), "'hooks.timeout_ms': 50 is not in 100..600000"),
    (("concurrency = 2", "concurrency = 0"), "'hooks.concurrency': 0 is not in 1..16"),
    (("concurrency = 2", 'concurrency = "2"'), "'hooks.concurrency': must be int"),
    (('"node-dead", "mmp-lost"', '"node-died"'), "'hooks.events': unknown event 'node-died'; did you mean 'node-dead'"),
    (('events = ["node-dead", "mmp-lost"]', "events = []"), "'hooks.events': is empty"),
    (('dir = "/etc/diskhb/hooks.d"', 'dir = "hooks.d"'), "'hooks.dir': 'hooks.d' is not an absolute path"),
    (('["/usr/local/sbin/page-oncall"]', '["page-oncall --urgent"]'), "'hooks.commands': 'page-oncall --urgent' is"
                                                                       " not an absolute path"),
    (('["/usr/local/sbin/page-oncall"]', '["/a", "/a"]'), "'hooks.commands': listed twice: \\['/a'\\]"),
    (('dir = "/etc/diskhb/hooks.d"\ncommands = ["/usr/local/sbin/page-oncall"]\n', ""), "'hooks': runs nothing"),
    (("concurrency = 2", "concurency = 2"), "'hooks.concurency': unknown key; did you mean 'concurrency'"),
])
def test_hooks_mistakes_are_one_line(tmp_path, change, match):
    with pytest.raises(OperatorError, match=match) as e:
        load_config(write(tmp_path, HOOKS.replace(*change)))
    assert "\n" not in str(e.value)


# -- fencing methods: [node] fence, [scsi-pr], [fence-agent] (issue 11) ------------------------------------

FENCING = GOOD.replace('id = 1\n', 'id = 1\nfence = ["scsi-pr", "pill", "agent"]\n') + """
[quorum]
nodes = [1, 2, 3]
[scsi-pr]
luns = ["iscsi://192.0.2.5:3260/iqn.2024-01.org.example:lun0/1", "/dev/sg3"]
initiator = "iqn.2024-01.org.example:node1"
[fence-agent]
agent = "fence_ipmilan"
params = { ip = "192.0.2.9", username = "admin" }
plugs = { node2 = "2" }
"""


def test_fencing_methods_parse():
    cfg = parse_config(__import__("tomllib").loads(FENCING), "c.toml")
    assert cfg.node.fence == ("scsi-pr", "pill", "agent")
    assert cfg.scsi_pr.luns[1] == "/dev/sg3" and cfg.scsi_pr.timeout_ms == 10_000
    assert cfg.scsi_pr.audit_interval_ms == 5_000 and cfg.scsi_pr.command_timeout_ms == 3_000
    assert cfg.fence_agent.agent == "fence_ipmilan" and cfg.fence_agent.action == "off"
    assert dict(cfg.fence_agent.params) == {"ip": "192.0.2.9", "username": "admin"}
    assert dict(cfg.fence_agent.plugs) == {"node2": "2"}


def test_the_default_order_is_the_pill_with_a_quorum_and_a_disk():
    with_quorum = parse_config(__import__("tomllib").loads(GOOD + "[quorum]\nnodes = [1, 2]\n"), "c.toml")
    assert with_quorum.node.fence == ("pill",)
    assert parse_config(__import__("tomllib").loads(GOOD), "c.toml").node.fence == ()


@pytest.mark.parametrize("old, new, match", [
    ('fence = ["scsi-pr", "pill", "agent"]', 'fence = ["scsi-pr", "pil"]', "unknown method 'pil'; did you mean 'pill'"),
    ('fence = ["scsi-pr", "pill", "agent"]', 'fence = ["pill", "pill"]', "lists a method twice"),
    ('fence = ["scsi-pr", "pill", "agent"]', 'fence = []', "'node.fence': is empty"),
    ("[quorum]\nnodes = [1, 2, 3]\n", "", "fencing needs a \\[quorum\\]"),
    ('[scsi-pr]\nluns = ["iscsi://192.0.2.5:3260/iqn.2024-01.org.example:lun0/1", "/dev/sg3"]\n'
     'initiator = "iqn.2024-01.org.example:node1"\n', "", "method 'scsi-pr' needs \\[scsi-pr\\]"),
    ('luns = ["iscsi://192.0.2.5:3260/iqn.2024-01.org.example:lun0/1", "/dev/sg3"]',
     'luns = ["/dev/sg3", "/dev/sg3"]', "lists a LUN twice"),
    ('luns = ["iscsi://192.0.2.5:3260/iqn.2024-01.org.example:lun0/1", "/dev/sg3"]',
     'luns = ["nfs://x/y"]', "only iscsi:// URLs and device paths"),
    ('initiator = "iqn.2024-01.org.example:node1"', 'initiator = "iqn.x"\ntimeout_ms = 50',
     "'scsi-pr.timeout_ms': 50 is not in command_timeout_ms"),
    ('agent = "fence_ipmilan"', 'agent = "fence_ipmilan"\naction = "on"', "'fence-agent.action': 'on'"),
    ('username = "admin"', 'username = "admin\\naction=on"', "contains a newline"),
    ('[fence-agent]\nagent = "fence_ipmilan"\nparams = { ip = "192.0.2.9", username = "admin" }\n'
     'plugs = { node2 = "2" }\n', "", "method 'agent' needs \\[fence-agent\\]"),
])
def test_fencing_mistakes_are_one_line(old, new, match):
    import tomllib

    assert old in FENCING
    with pytest.raises(OperatorError, match=match) as e:
        parse_config(tomllib.loads(FENCING.replace(old, new)), "c.toml")
    assert "\n" not in str(e.value) and str(e.value).startswith("c.toml: ")


def test_a_resource_on_the_pr_luns_is_marked():
    import tomllib

    cfg = parse_config(tomllib.loads(FENCING + '[[resource]]\nname = "ost0"\non_pr_luns = true\n'), "c.toml")
    assert cfg.resources[0].on_pr_luns is True
    with pytest.raises(OperatorError, match="'resource\\[1\\].on_pr_luns': 'yes' is not true or false"):
        parse_config(tomllib.loads(FENCING + '[[resource]]\nname = "ost0"\non_pr_luns = "yes"\n'), "c.toml")
