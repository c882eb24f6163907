"""What a new user stumbled on (issue 12 part 8): -V, hex generations in every JSON output,
`status --config` among several daemons of one host, a JSON error object, `dump --slot`'s
mailbox, help texts, and `run --check`."""

from __future__ import annotations

import json
import os
import urllib.request

from cluster import diskhb, wait_until

JS_SAFE_MAX = 2 ** 53 - 1  # the largest integer a double (jq, JavaScript, Grafana) holds exactly


def as_jq_reads_it(text: str):
    """JSON parsed the way jq and JavaScript do: every number a double."""
    return json.loads(text, parse_int=float)


def numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


def generations(view: dict) -> dict[int, str]:
    return {n["id"]: n["generation"] for n in view["nodes"]}


def check_hex_json(text: str) -> dict:
    """Every generation a "0x..." string that survives a double-parsing reader; no number too large."""
    exact, lossy = json.loads(text), as_jq_reads_it(text)
    assert generations(exact) == generations(lossy)
    for gen in generations(exact).values():
        assert isinstance(gen, str) and gen.startswith("0x") and int(gen, 16) > 0, gen
    big = [n for n in numbers(exact) if abs(n) > JS_SAFE_MAX]
    assert not big, f"numbers a double would round: {big}"
    return exact


def test_version_has_a_short_option():
    short, long = diskhb("-V"), diskhb("--version")
    assert short.returncode == long.returncode == 0 and short.stdout == long.stdout
    assert short.stdout.startswith("diskhb, version ")


def test_status_json_error_is_an_object_on_stdout_and_one_line_on_stderr(tmp_path):
    r = diskhb("status", str(tmp_path / "nope.img"), "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"error": f"{tmp_path / 'nope.img'}: no such file or device; check the path"
                                             " (is the device attached?)", "exit": 2}
    assert r.stderr.strip().splitlines() == [f"diskhb: error: {json.loads(r.stdout)['error']}"]
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    r = diskhb("status", str(blank), "--json")
    assert r.returncode == 2 and "no diskhb superblock" in json.loads(r.stdout)["error"]
    r = diskhb("status", "--json")  # neither PATH nor --config
    assert r.returncode == 2 and json.loads(r.stdout)["exit"] == 2 and "--config" in json.loads(r.stdout)["error"]
    r = diskhb("status", str(blank))  # without --json stdout stays empty
    assert r.returncode == 2 and r.stdout == ""


def test_generations_are_hex_strings_in_every_json_a_daemon_gives(cluster):
    cluster.start(1)
    cluster.start(2)
    cluster.wait_state(1, 2, "alive")
    cluster.wait_state(2, 1, "alive")
    r = diskhb("status", cluster.region, "--json", "--run-dir", cluster.run_dir)
    assert r.returncode == 0, r.stderr
    daemon = check_hex_json(r.stdout)
    assert daemon["source"] == "daemon" and daemon["node"]["generation"] == generations(daemon)[1]
    r = diskhb("status", cluster.region, "--json", "--no-daemon")
    disk = check_hex_json(r.stdout)
    assert disk["source"] == "disk" and generations(disk) == generations(daemon)
    # the daemon logged the same incarnation, in the same spelling
    gen1 = daemon["node"]["generation"]
    wait_until(lambda: f"generation {gen1}" in cluster.log(1), 5, "node 1's start line")
    # the metrics endpoint's /status: the same snapshot
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports[1]}/status", timeout=5) as resp:
        check_hex_json(resp.read().decode())
    # the control socket's peer answer (mmp's fast paths read it): hex too
    from diskhb.control import request

    sock = os.path.join(cluster.run_dir, "diskhb-test-1.sock")
    peer = request(sock, "peer 2", 5)
    assert peer["state"] == "alive" and peer["generation"] == generations(daemon)[2]


def test_status_config_picks_the_daemon_among_several_on_one_host(cluster):
    cluster.start(1)
    cluster.start(2)
    cluster.wait_state(1, 2, "alive")
    cluster.wait_state(2, 1, "alive")
    cfg2 = os.path.join(cluster.workdir, "node2.toml")
    first = json.loads(diskhb("status", cluster.region, "--json", "--run-dir", cluster.run_dir).stdout)
    assert first["node"]["id"] == 1, "without --config: the first daemon serving PATH"
    for args in ((cluster.region, "--config", cfg2), ("--config", cfg2)):  # PATH defaults to its first region
        r = diskhb("status", *args, "--json")
        assert r.returncode == 0, r.stderr
        view = json.loads(r.stdout)
        assert view["source"] == "daemon" and view["node"]["id"] == 2 and view["node"]["name"] == "node2"
    r = diskhb("status", "--config", cfg2)
    assert r.returncode == 0 and "(daemon view of node2, id 2," in r.stdout
    cluster.kill(2)  # no answer: the disk is sampled instead
    view = json.loads(diskhb("status", "--config", cfg2, "--json", "--sample-ms", "0").stdout)
    assert view["source"] == "disk"


def test_dump_slot_prints_its_mailbox(tmp_path):
    p = str(tmp_path / "r.img")
    assert diskhb("format", p, "--cluster", "test", "--slots", "4").returncode == 0
    out = diskhb("dump", p, "--slot", "3").stdout
    assert "slot 3 @" in out and "mailbox 3 @" in out and "never written" in out.split("mailbox 3 @")[1]
    r = diskhb("message", p, "3", "test")
    assert r.returncode == 0, r.stderr
    out = diskhb("dump", p, "--slot", "3", "--raw").stdout
    line = next(x for x in out.splitlines() if x.startswith("mailbox 3 @"))
    assert "message=test" in line and "seq=1" in line, line
    assert "mailbox 3" not in diskhb("dump", p, "--slot", "2").stdout
    boxes = json.loads(diskhb("status", p, "--json", "--sample-ms", "0").stdout)["mailboxes"]
    assert boxes["3"]["target_generation"] == "0x0", boxes  # hex like every generation (none yet: 0)


def test_help_documents_every_option():
    inspect = diskhb("mmp", "inspect", "--help").stdout
    assert "--json" in inspect and "One JSON object" in inspect
    init = diskhb("mmp", "init", "--help").stdout
    assert "interval recorded in the new CLEAN block" in " ".join(init.split())
    run = " ".join(diskhb("mmp", "run", "--help").stdout.split())
    assert "Not for mount(8)" in run
    top = " ".join(diskhb("--help").stdout.split())
    assert "_DISKHB_COMPLETE=bash_source diskhb" in top and "-V, --version" in top


# -- diskhb run --check ----------------------------------------------------------------------------


def _config(tmp_path, region: str, extra: str = "") -> str:
    cfg = tmp_path / "node1.toml"
    cfg.write_text(f'[node]\nname = "n1"\nid = 1\nrun_dir = "{tmp_path / "run"}"\n[metrics]\nlisten = ""\n{extra}'
                   f'[[region]]\ntype = "disk"\npath = "{region}"\n')
    return str(cfg)


def _formatted(tmp_path, *extra: str) -> str:
    p = str(tmp_path / "r.img")
    r = diskhb("format", p, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000", *extra)
    assert r.returncode == 0, r.stderr
    return p


def test_run_check_passes_a_good_config_and_starts_nothing(tmp_path):
    region = _formatted(tmp_path, "--watchdog-timeout-s", "5")
    wd = tmp_path / "watchdog"
    wd.write_bytes(b"")
    cfg = _config(tmp_path, region, f'[watchdog]\ndevice = "{wd}"\ntimeout_s = 5\n'
                                    '[[resource]]\nname = "db"\n')
    before = open(region, "rb").read()
    r = diskhb("run", "--config", cfg, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(x.startswith("ok    ") for x in lines), lines
    assert any(x.startswith(f"ok    region disk:{region}: cluster test") for x in lines), lines
    assert any("watchdog" in x and "not opened" in x for x in lines) and any("resource db" in x for x in lines)
    assert open(region, "rb").read() == before and wd.read_bytes() == b"", "a check writes nothing"
    assert not (tmp_path / "run").exists(), "no control socket, no run dir"


def test_run_check_refuses_a_watchdog_longer_than_the_clusters_in_one_line(tmp_path):
    region = _formatted(tmp_path, "--watchdog-timeout-s", "5")
    wd = tmp_path / "watchdog"
    wd.write_bytes(b"")
    cfg = _config(tmp_path, region, f'[watchdog]\ndevice = "{wd}"\ntimeout_s = 10\n')
    r = diskhb("run", "--config", cfg, "--check")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    failed = [x for x in r.stdout.splitlines() if x.startswith("FAIL")]
    assert len(failed) == 1, r.stdout
    assert failed[0].startswith("FAIL  watchdog: ") and "timeout_s 10 exceeds the cluster's 5 s" in failed[0]
    # the daemon refuses that start with the same words (the same check: diskhb.preflight)
    r = diskhb("run", "--config", cfg)
    assert r.returncode == 2 and "timeout_s 10 exceeds the cluster's 5 s" in r.stderr


def test_run_check_failures_are_one_line_each(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[node]\nname = "a"\nid = 1\nbogus = 1\n[[region]]\ntype = "disk"\npath = "/x"\n')
    r = diskhb("run", "--config", str(cfg), "--check")
    assert r.returncode == 1 and r.stdout.splitlines() == [f"FAIL  config {cfg}: {cfg}: 'node.bogus': unknown key;"
                                                            " allowed: fence, id, mlock, name, oom_score_adj, rt_priority,"
                                                            " run_dir, sched"]
    region = _formatted(tmp_path)
    r = diskhb("run", "--config", _config(tmp_path, region, '[cluster]\ninterval_ms = 200\n'), "--check")
    assert r.returncode == 1
    assert [x for x in r.stdout.splitlines() if x.startswith("FAIL")] == [
        f"FAIL  cluster timing: {tmp_path / 'node1.toml'}: cluster.interval_ms = 200 disagrees with the region's"
        " 100; every node must use the region's timing (remove the key or reformat)"]
    r = diskhb("run", "--config", _config(tmp_path, str(tmp_path / "missing.img")), "--check")
    assert r.returncode == 1 and f"FAIL  region disk:{tmp_path / 'missing.img'}: " in r.stdout
