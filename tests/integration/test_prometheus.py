"""Prometheus: a live scrape passes `promtool check metrics` without a lint warning, the alert
rules (contrib/prometheus) check and pass their unit tests, which cover every alert firing and
not firing, and every metric the rules and the Grafana dashboard (contrib/grafana) name exists
in the code: a renamed metric fails here, not on an operator's dashboard.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from cluster import ROOT, Cluster, diskhb, free_port, metric_value, wait_until  # `cluster`: tests/conftest.py
from test_mmp_daemon import ask

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian package prometheus;"
                                                             " `make test` installs it as root)")
RULES = os.path.join(ROOT, "contrib", "prometheus", "diskhb.rules.yml")
RULE_TESTS = os.path.join(ROOT, "contrib", "prometheus", "diskhb.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "contrib", "grafana", "diskhb.json")
CODE = ("diskhb", "netpath")
# A metric is defined where client_python (or a collector) is handed its name.
DEFINED = re.compile(r'(?:Counter|Gauge|Histogram|Summary|MetricFamily|_counter)\(\s*"(diskhb_[a-z_]+)"')
NAME = re.compile(r"diskhb_[a-z_]+")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(RULES))


def defined_metrics() -> set[str]:
    names = set()
    for top in CODE:
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    with open(os.path.join(d, f)) as src:
                        names.update(DEFINED.findall(src.read()))
    return names


def undefined(text: str, defined: set[str]) -> set[str]:
    """Metric names in `text` the code does not define (a histogram's series count as its name)."""
    return {n for n in NAME.findall(text) if n not in defined and re.sub(r"_(bucket|sum|count)$", "", n) not in defined}


def dashboard_exprs(node) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets (rows included) and variable queries."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" or (k == "definition" and isinstance(v, str)):
                out.append(v)
            else:
                out.extend(dashboard_exprs(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(dashboard_exprs(v))
    return out


# -- a live scrape ------------------------------------------------------------------------------------

RESOURCE = '[[resource]]\nname = "db"\ninterval_ms = 2000\non_loss = ["none"]\n'
QUORUM = "[quorum]\nnodes = [1, 2, 3]\n"
HOOKS = '[hooks]\ncommands = ["/bin/true"]\n'  # the hook families (labelled by hook) exist only with hooks


def link(key: str, ports: dict[int, int], node_id: int) -> str:
    peers = ", ".join(f'"127.0.0.1:{p}"' for i, p in ports.items() if i != node_id)
    return (f'[[region]]\ntype = "net"\nname = "lan0"\nbind = "127.0.0.1"\nport = {ports[node_id]}\n'
            f'peers = [{peers}]\nkey = "{key}"\n')


@pytest.mark.slow
@needs_promtool
def test_a_live_scrape_passes_promtool_lint_with_every_family_present(cluster: Cluster, tmp_path):
    """Three daemons with quorum, a held MMP resource and a UDP link, node 1 with a hook; node 3
    killed so that a death is detected and a fence attempted: every family of the code shows up,
    with samples."""
    key = str(tmp_path / "authkey")
    assert diskhb("keygen", key).returncode == 0
    udp = {i: free_port() for i in (1, 2, 3)}
    for i in (1, 2, 3):
        cluster.start(i, extra=QUORUM + RESOURCE + link(key, udp, i) + (HOOKS if i == 1 else ""))
    for i in (1, 2):
        wait_until(lambda i=i: ((cluster.view(i) or {}).get("quorum") or {}).get("votes") == 3, 15,
                   f"node {i} counts all three")
    assert ask(cluster, 1, "mmp-acquire db 0 1")["ok"]
    cluster.kill(3)

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports[1]}/metrics", timeout=5).read().decode()

    wait_until(lambda: (metric_value(scrape(), "diskhb_fence_attempts_total", method="pill", result="pending") or 0)
               >= 1, 15, "node 1 (node 3's fencer) tries to fence it")
    text = scrape()
    r = promtool("check", "metrics", stdin=text)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr

    assert metric_value(text, "diskhb_mmp_held", resource="db") == 1.0
    assert metric_value(text, "diskhb_mmp_lost_total", resource="db") == 0.0  # at 0 before any loss
    assert metric_value(text, "diskhb_fence_attempts_total", method="pill", result="failed") == 0.0
    assert metric_value(text, "diskhb_node_death_detection_seconds_count") == 1.0
    assert metric_value(text, "diskhb_node_alive", node="node2") == 1.0
    assert metric_value(text, "diskhb_node_alive", node="node3") == 0.0
    assert metric_value(text, "diskhb_quorate") == 1.0
    assert metric_value(text, "diskhb_hook_events_dropped_total", hook="/bin/true") == 0.0
    wait_until(lambda: metric_value(scrape(), "diskhb_hook_runs_total", hook="/bin/true", result="ok"), 10,
               "node 1's hook run on node 3's death")
    families = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    missing = {n for n in defined_metrics() if n not in families and n.removesuffix("_total") not in families}
    assert not missing, f"families defined in the code but not in a scrape: {sorted(missing)}"


# -- rules and dashboard ------------------------------------------------------------------------------

@needs_promtool
def test_the_alert_rules_check():
    r = promtool("check", "rules", RULES)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests():
    r = promtool("test", "rules", RULE_TESTS)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_not_firing_unit_test():
    with open(RULES) as f:
        alerts = re.findall(r"^\s*- alert:\s*(\w+)", f.read(), re.M)
    assert len(alerts) == 9
    with open(RULE_TESTS) as f:
        cases = re.split(r"^\s*- eval_time:", f.read(), flags=re.M)[1:]
    fires, quiet = set(), set()
    for case in cases:
        name = re.search(r"alertname:\s*(\w+)", case).group(1)
        (quiet if re.search(r"exp_alerts:\s*\[\]", case) else fires).add(name)
    assert not set(alerts) - fires, f"no firing case: {sorted(set(alerts) - fires)}"
    assert not set(alerts) - quiet, f"no not-firing case: {sorted(set(alerts) - quiet)}"
    assert fires | quiet <= set(alerts), "a unit test names an alert the rules do not have"


def test_rules_and_dashboard_name_only_metrics_the_code_defines():
    defined = defined_metrics()
    assert {"diskhb_node_alive", "diskhb_mmp_lost_total", "diskhb_net_packets_rejected_total"} <= defined
    with open(DASHBOARD) as f:
        dash = json.load(f)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 10 and all(p.get("targets") for p in panels)
    exprs = dashboard_exprs(dash)
    assert len(exprs) >= len(panels)
    for path in (RULES, RULE_TESTS):
        with open(path) as f:
            bad = undefined(f.read(), defined)
        assert not bad, f"{path}: metrics the code does not define: {sorted(bad)}"
    bad = {n for e in exprs for n in undefined(e, defined)}
    assert not bad, f"{DASHBOARD}: metrics the code does not define: {sorted(bad)}"


@needs_promtool
def test_every_dashboard_expression_parses(tmp_path):
    """Grafana's variables replaced by what Grafana would put there; promtool parses each as a rule."""
    with open(DASHBOARD) as f:
        exprs = dashboard_exprs(json.load(f))
    subst = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*"}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, e in enumerate(exprs):
        if e.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        for k, v in subst.items():
            e = e.replace(k, v)
        lines += [f"      - record: dashboard_expr_{i}", f"        expr: {json.dumps(e)}"]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text("\n".join(lines) + "\n")
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
