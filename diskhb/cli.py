"""The `diskhb` command. Operator mistakes print one line (`diskhb: error: ...`), never a traceback.

Exit codes: 0 ok; 1 a safe refusal (slot or resource in use, existing data found); 2 bad input
(usage, config, unformatted or corrupt region); 3 the daemon stopped itself for safety.

Shell completion is click's: `eval "$(_DISKHB_COMPLETE=bash_source diskhb)"` (zsh_source,
fish_source likewise); tools/manpage.py writes diskhb.1 from this command tree.
"""

from __future__ import annotations

import json
import sys
import time

import click

from diskhb.config import DEFAULT_RUN_DIR
from diskhb.errors import OperatorError
from diskhb.mmp.cli import mmp
from diskhb.regions.disk import format as fmt
from netpath.keys import KEY_ID_MAX, KEY_ID_MIN, generate_key_file

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(None, "-V", "--version", package_name="diskhb")
def cli() -> None:
    """Disk heartbeat and shared-storage arbitration for HA storage clusters.

    Shell completion: eval "$(_DISKHB_COMPLETE=bash_source diskhb)" in ~/.bashrc (zsh_source,
    fish_source for zsh and fish).
    """


@cli.command("format")
@click.argument("path")
@click.option("--cluster", required=True, help="Cluster name (every node's config must agree).")
@click.option("--slots", type=click.IntRange(fmt.SLOTS_MIN, fmt.SLOTS_MAX), default=fmt.DEFAULT_SLOTS,
              show_default=True, help="Node slots (node ids 1..N).")
@click.option("--sector-size", type=click.Choice(["512", "4096"]), default=None,
              help="Sector size; default: the device's, or 512 for a file.")
@click.option("--interval-ms", type=int, default=fmt.DEFAULT_INTERVAL_MS, show_default=True,
              help="Heartbeat interval.")
@click.option("--dead-ms", type=int, default=fmt.DEFAULT_DEAD_MS, show_default=True,
              help="A node whose heartbeat has not advanced for this long is dead.")
@click.option("--io-timeout-ms", type=int, default=None,
              help="Own I/O slower than this marks the region unhealthy [default: dead-ms/2].")
@click.option("--mmp-resources", type=click.IntRange(0, fmt.MMP_RESOURCES_MAX),
              default=fmt.DEFAULT_MMP_RESOURCES, show_default=True, help="MMP guard blocks to reserve.")
@click.option("--watchdog-timeout-s", type=click.IntRange(0, 3600), default=0, show_default=True,
              help="The cluster's watchdog timeout: every node must run a [watchdog] at most this long, and"
                   " peers take a silent fenced node's storage over at its self-fence deadline (0: no"
                   " watchdog; silent nodes' storage waits for the MMP classic watch).")
@click.option("--force", is_flag=True, help="Overwrite an existing filesystem, label or (idle) region.")
def format_cmd(path, cluster, slots, sector_size, interval_ms, dead_ms, io_timeout_ms, mmp_resources,
               watchdog_timeout_s, force):
    """Format PATH (block device or file; a missing file is created) as a heartbeat region."""
    from diskhb.regions.disk.make import make_region

    if path.startswith("uuid:"):  # not a file name to create: a new format has a new uuid anyway
        raise OperatorError(f"{path}: format takes a device or file path, not uuid: (the format gives the region a"
                            " new uuid); 'diskhb scan' shows which device carries that one")

    sb = make_region(path, cluster=cluster, slots=slots, sector_size=int(sector_size) if sector_size else None,
                     interval_ms=interval_ms, dead_ms=dead_ms, io_timeout_ms=io_timeout_ms,
                     mmp_resources=mmp_resources, force=force, watchdog_ms=watchdog_timeout_s * 1000)
    click.echo(f"{path}: formatted diskhb region v{sb.version} for cluster {sb.cluster!r}: {sb.slot_count} slots"
               f" of {sb.sector_size} bytes, interval {sb.interval_ms} ms, dead {sb.dead_ms} ms,"
               f" io timeout {sb.io_timeout_ms} ms"
               + (f", watchdog {watchdog_timeout_s} s" if watchdog_timeout_s else "") + f", uuid {sb.uuid_str}")


@cli.command("status")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object with a `nodes` list; generations are hex strings (\"0x5fa3...\"). On an"
                   " error: {\"error\": \"...\", \"exit\": N}.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--count", type=click.IntRange(1, None), default=None, help="With --watch: stop after N refreshes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Ask this node's daemon (one of several on this host); PATH defaults to its first disk region.")
@click.option("--run-dir", default=None,
              help=f"Where running daemons keep their control sockets [default: {DEFAULT_RUN_DIR}, or the"
                   " config's]; without --config, the first daemon there serving PATH answers.")
@click.option("--no-daemon", is_flag=True, help="Read the disk even when a daemon serves it.")
@click.option("--sample-ms", type=click.IntRange(0, 600_000), default=None,
              help="Disk view: sample at most this long [default: dead time + 2 intervals].")
def status_cmd(path, as_json, watch, count, config_path, run_dir, no_daemon, sample_ms):
    """Who is alive on PATH (a device, a file, or uuid:UUID): from the daemon serving it, else by
    sampling the disk."""
    try:
        _status(path, as_json, watch, count, config_path, run_dir, no_daemon, sample_ms)
    except OperatorError as e:
        if as_json:  # a script reading stdout gets an answer too; the line on stderr stays
            click.echo(json.dumps({"error": str(e), "exit": e.exit_code}, sort_keys=True))
        raise


def _status(path, as_json, watch, count, config_path, run_dir, no_daemon, sample_ms) -> None:
    from diskhb.status import query_daemon, query_node_daemon, render_table, sample_region

    cfg = None
    if config_path is not None:
        from diskhb.config import load_config

        cfg = load_config(config_path)
        run_dir = run_dir or cfg.node.run_dir
        if path is None and cfg.disk_regions:
            path = cfg.disk_regions[0].path
    elif path is None:
        raise OperatorError("name a region (diskhb status PATH) or this node's config (--config FILE)")
    run_dir = run_dir or DEFAULT_RUN_DIR
    from diskhb.regions.disk.devices import resolve_path

    path = resolve_path(path)
    shown = 0
    while True:
        view = None
        if not no_daemon:
            view = query_node_daemon(cfg, run_dir, path) if cfg is not None else query_daemon(path, run_dir)
        if view is None:
            if path is None:
                raise OperatorError(f"{config_path}: no answer from node {cfg.node.id}'s daemon (in {run_dir}) and"
                                    " no disk region to sample")
            view = sample_region(path, sample_ms)
        if as_json:
            click.echo(json.dumps(view, sort_keys=True))
        else:
            if watch and sys.stdout.isatty():
                click.clear()
            if watch:
                click.echo(time.strftime("%Y-%m-%d %H:%M:%S"))
            click.echo(render_table(view))
        shown += 1
        if not watch or (count is not None and shown >= count):
            return
        sys.stdout.flush()
        time.sleep(view["interval_ms"] / 1000 if view["source"] == "daemon" else 0.2)


@cli.command("dump")
@click.argument("path")
@click.option("--slot", type=int, default=None, help="Only this node's slot and mailbox.")
@click.option("--raw", is_flag=True, help="Add a hexdump of every structure shown.")
def dump_cmd(path, slot, raw):
    """Every decoded structure of the region at PATH (a device, a file, or uuid:UUID)."""
    from diskhb.regions.disk.devices import resolve_path
    from diskhb.status import dump_region

    click.echo(dump_region(resolve_path(path), slot=slot, raw=raw))


@cli.command("message")
@click.argument("path")
@click.argument("node", type=int)
@click.argument("message", type=click.Choice(["test", "clear"]))
@click.option("--sender", type=int, default=0, show_default=True, help="The sender's node id (0: an operator).")
def message_cmd(path, node, message, sender):
    """Write a message into NODE's mailbox on the region at PATH (or uuid:UUID; never waits for it)."""
    from diskhb.mailbox import send_message
    from diskhb.regions.disk.devices import resolve_path

    click.echo(send_message(resolve_path(path), node, message, sender))


@cli.command("scan")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: devices, counts, uuid verdicts.")
def scan_cmd(as_json):
    """Block devices carrying diskhb regions, ext4 MMP filesystems and other signatures.

    One line per device with a signature on stdout (size, what it carries, /dev/disk/by-id
    names, holders, mounts); a diskhb region says where its uuid: path resolves. The summary
    (devices without a signature or that did not answer, udev's absence) goes to stderr.
    Read-only; every device read is bounded in time.
    """
    from diskhb.regions.disk.devices import describe_entry, describe_summary, scan

    report = scan()
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    for row in report["devices"]:
        click.echo(describe_entry(row))
    for line in describe_summary(report):
        click.echo(line, err=True)


@cli.command("fence")
@click.argument("node", type=click.IntRange(1, None))
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="This node's daemon config [default: the only daemon in --run-dir].")
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True,
              help="Where running daemons keep their control sockets.")
@click.option("--method", type=click.Choice(["scsi-pr", "pill", "agent"]), default=None,
              help="Only this method (it must be in [node] fence): scsi-pr (preempt its key on every LUN),"
                   " pill (the node fences itself on sight), agent (the fence agent's off) [default: the"
                   " configured order].")
@click.option("--force", is_flag=True, help="Fence even though this node is not quorate.")
def fence_cmd(node, config_path, run_dir, method, force):
    """Fence NODE through this node's daemon; returns at once (see 'diskhb status' for the outcome)."""
    from diskhb.control import ControlError, FenceNode, request

    sock = _daemon_socket(config_path, run_dir)
    try:
        out = request(sock, FenceNode(node, force, method or ""), 10.0)
    except ControlError as e:
        raise OperatorError(f"no answer from the daemon ({e})") from None
    if not out.get("ok"):
        click.echo(f"diskhb: error: {out.get('error') or out}", err=True)
        sys.exit(out.get("exit") if out.get("exit") in (1, 2) else 1)
    click.echo(f"node {out['node']} (generation {out['generation']}): fence ordered (attempt {out['attempt']},"
               f" {method or 'the configured methods'}); see 'diskhb status' for its outcome")


UNFENCE_WAIT_S = 60.0  # the daemon bounds each LUN by [scsi-pr] timeout_ms; this bounds the wait for all


@cli.command("unfence")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="This node's daemon config [default: the only daemon in --run-dir].")
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True,
              help="Where running daemons keep their control sockets.")
def unfence_cmd(config_path, run_dir):
    """Register this node's reservation key again on the LUNs where it is missing ([scsi-pr]).

    The daemon never does that by itself once registered: a key removed by a fencer means this
    node was fenced (it fenced itself too; restart it to rejoin), and a key lost with an iSCSI
    reconnect waits for this command. Refused unless the daemon runs, is quorate and has not
    fenced itself."""
    from diskhb.control import ControlError, Unfence, request

    sock = _daemon_socket(config_path, run_dir)
    try:
        out = request(sock, Unfence(), UNFENCE_WAIT_S)
    except ControlError as e:
        raise OperatorError(f"no answer from the daemon ({e})") from None
    if not out.get("ok"):
        click.echo(f"diskhb: error: {out.get('error') or out}", err=True)
        sys.exit(out.get("exit") if out.get("exit") in (1, 2) else 1)
    for line in out.get("luns", []):
        click.echo(line)


def _daemon_socket(config_path: str | None, run_dir: str) -> str:
    """This node's daemon's control socket: from its config, or the only one in run_dir."""
    import glob
    import os

    from diskhb.control import node_sockets

    if config_path is not None:
        from diskhb.config import load_config

        cfg = load_config(config_path)
        found = [p for p in node_sockets(cfg.node.run_dir, cfg.cluster.name, cfg.node.id) if os.path.exists(p)]
        if len(found) != 1:
            raise OperatorError(f"{config_path}: no running daemon of node {cfg.node.id} (no control socket in"
                                f" {cfg.node.run_dir})")
        return found[0]
    found = sorted(glob.glob(os.path.join(run_dir, "diskhb-*.sock")))
    if len(found) != 1:
        raise OperatorError(f"{run_dir}: {'no' if not found else len(found)} running daemons; name this node's"
                            " with --config")
    return found[0]


@cli.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="TOML config (see README).")
@click.option("--check", is_flag=True,
              help="Only check the config and the cluster's timing as a start would (superblocks read, nothing"
                   " written or started): one line per check, exit 0 if every one passes, else 1.")
def run_cmd(config_path, check):
    """Run the heartbeat daemon in the foreground."""
    if check:
        from diskhb.preflight import run_checks

        failed = 0
        for ok, line in run_checks(config_path):
            click.echo(f"{'ok  ' if ok else 'FAIL'}  {line}")
            failed += not ok
        sys.exit(1 if failed else 0)
    from diskhb.config import load_config
    from diskhb.daemon import run_daemon

    sys.exit(run_daemon(load_config(config_path)))


@cli.command("keygen")
@click.argument("path")
@click.option("--key-id", type=click.IntRange(KEY_ID_MIN, KEY_ID_MAX), default=1, show_default=True,
              help="Use a new id when rotating: peers accept two key ids at once.")
def keygen_cmd(path, key_id):
    """Write a new HMAC key file (mode 0600) for network and serial regions."""
    fingerprint = generate_key_file(path, key_id)
    click.echo(f"{path}: wrote key id {key_id} (fingerprint {fingerprint}); copy it to every node "
               "(mode 0600, owned by root) and compare fingerprints")


cli.add_command(mmp)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="diskhb", standalone_mode=False)
    except OperatorError as e:
        click.echo(f"diskhb: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("diskhb: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
