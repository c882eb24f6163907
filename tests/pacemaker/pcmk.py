"""Test helpers for the Pacemaker agents: run the resource agent and the fence agent against this
checkout, a 3-node quorate cluster with one guarded resource, and Pacemaker's own tools run with
the agents installed in a private mount namespace (an overlay over the system directory that
disappears with the namespace: nothing is ever written under /usr)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from cluster import ROOT, Cluster, diskhb, wait_until

GUARD = os.path.join(ROOT, "contrib", "ocf", "guard")
RESOURCE = "ost0"
INTERVAL_MS = 1000  # the resource's MMP interval: a classic watch is 2 x 1 + 1 = 3 s
CLASSIC_S = (2 * INTERVAL_MS + 1000) / 1000
RESOURCE_TOML = f'[[resource]]\nname = "{RESOURCE}"\ninterval_ms = {INTERVAL_MS}\non_loss = ["none"]\n'
QUORUM = "[quorum]\nnodes = [1, 2, 3]\n"
OCF_SHELLFUNCS = "/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs"


def public_dir() -> str:
    """A fresh directory every user can read (ocf-tester runs meta-data as nobody; pytest's
    tmp_path is 0700). The caller removes it."""
    d = tempfile.mkdtemp(prefix="diskhb-pcmk-", dir="/var/tmp")
    os.chmod(d, 0o755)
    return d


def write_wrappers(d: str) -> dict[str, str]:
    """`diskhb` and `fence_diskhb` commands that run this checkout (what the package installs)."""
    out = {}
    for name, module in (("diskhb", "diskhb.cli"), ("fence_diskhb", "diskhb.pacemaker.fence_agent")):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m {module} "$@"\n')
        os.chmod(path, 0o755)
        out[name] = path
    return out


@pytest.fixture
def tools():
    d = public_dir()
    try:
        wrappers = write_wrappers(d)
        agent = os.path.join(d, "guard")
        shutil.copy(GUARD, agent)
        os.chmod(agent, 0o755)
        yield {"dir": d, "agent": agent, **wrappers}
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def quorate(tmp_path):
    """Three daemons with [quorum] and the resource, all counting three votes; stopped after."""
    region = str(tmp_path / "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "8", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    c = Cluster(str(tmp_path), region)
    try:
        for i in (1, 2, 3):
            c.start(i, extra=QUORUM + RESOURCE_TOML)
        for i in (1, 2, 3):
            wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("votes") == 3, 20,
                       f"node {i} counts all three")
        yield c
    finally:
        c.stop_all()


def offline_config(d, *, quorum: bool = True) -> tuple[str, str]:
    """(config, region) of a node 1 whose daemon is not running: a formatted region, the resource."""
    region = os.path.join(str(d), "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "8")
    assert r.returncode == 0, r.stderr
    config = os.path.join(str(d), "node1.toml")
    with open(config, "w") as f:
        f.write(f'[node]\nname = "node1"\nid = 1\nrun_dir = "{os.path.join(str(d), "run")}"\n'
                f'{QUORUM if quorum else ""}{RESOURCE_TOML}[[region]]\ntype = "disk"\npath = "{region}"\n')
    return config, region


def config_of(c: Cluster, node_id: int) -> str:
    """A running node's config file (Cluster.config would write it anew, without its extras)."""
    path = os.path.join(c.workdir, f"node{node_id}.toml")
    assert os.path.exists(path), path
    return path


def ra_env(config: str, binary: str, **params: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCF_", "__OCF"))}
    env.update(OCF_ROOT="/usr/lib/ocf", OCF_RESOURCE_INSTANCE="guard-test", OCF_RESKEY_resource=RESOURCE,
               OCF_RESKEY_config=config, OCF_RESKEY_binary=binary, OCF_RESKEY_CRM_meta_interval="10000",
               OCF_RESKEY_CRM_meta_timeout="60000")
    env.update({f"OCF_RESKEY_{k}": v for k, v in params.items()})
    return {k: v for k, v in env.items() if v is not None}


def run_group(cmd: list[str], *, timeout: float, input: str | None = None, **kw) -> subprocess.CompletedProcess:
    """subprocess.run in a process group of its own, all of which is killed if it overruns (an
    agent's children, e.g. a `diskhb mmp release --force`, must not outlive the test; an agent
    that ends normally has waited for its children)."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except BaseException:
        kill_group(p)
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def kill_group(p: subprocess.Popen) -> None:
    """A command started in its own session, and everything it started, gone. Only while its
    leader still runs (not reaped), so the group id cannot belong to anyone else."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()


def ra(agent: str, action: str, env: dict, *, probe: bool = False, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(env)
    if probe:
        env["OCF_RESKEY_CRM_meta_interval"] = "0"
    return run_group([agent, action], env=env, timeout=timeout)


def reasons(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("ocf-exit-reason:")]


def fence(tools: dict, *args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return run_group([tools["fence_diskhb"], *args], input=stdin if stdin is not None else "", timeout=timeout)


def with_overlay(lower: str, upper_files: dict[str, str], cmd: str, workdir: str) -> subprocess.CompletedProcess:
    """Run shell `cmd` in a private mount namespace where `lower` (a system directory) shows
    `upper_files` ({relative path: source}) on top of its own content. The overlay lives and dies
    with the namespace; the system directory is never written."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    upper, work = os.path.join(workdir, "upper"), os.path.join(workdir, "work")
    os.makedirs(work, exist_ok=True)
    for rel, src in upper_files.items():
        dst = os.path.join(upper, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(src, dst)
        os.chmod(dst, 0o755)
    script = (f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {lower}"
              f" || exit 99\n{cmd}")
    r = run_group(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], timeout=120)
    if r.returncode == 99:
        pytest.skip(f"cannot mount an overlay over {lower} here: {r.stderr.strip()}")
    return r
