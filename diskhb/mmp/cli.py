"""`diskhb mmp ...`: multi-mount protection guards for shared-storage resources.

Every command names where the blocks live: `--region PATH` (a formatted diskhb region's MMP
area), `--config FILE` (this node's disk regions, node id and [[resource]] tables), or
`--device PATH --offset BYTES` (one block made by `mmp init` on any device).

Exit codes: 0 ok; 1 a safe refusal (held by someone, FSCK, contention); 2 bad input (unknown
resource, no MMP block, corrupt block, permission, usage); 3 the resource was lost while held
(the loss action ran); 4 the daemon did not answer: the outcome is unknown. `inspect` uses e2mmpstatus's codes: 0 safe, 1 in use, 2 error.

Who bumps after `acquire`? This node's daemon, when one runs (found through its control
socket in the run directory; diskhb.mmp.held): it acquires under its own generation and keeps
the block moving until `mmp release`. Without a daemon nobody else can: `acquire` then holds
the resource in the foreground (bumping every interval) until SIGINT/SIGTERM or `mmp release`,
then writes CLEAN. To guard a command, use `mmp run RESOURCE -- CMD` (flock(1) style).
Every acquisition asks a daemon serving the region (any node's) what it knows of the holder,
for the fast paths of diskhb.mmp.guard.fast_path; without one it takes the classic path.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import click

from diskhb.config import DEFAULT_RUN_DIR
from diskhb.core import timing
from diskhb.errors import OperatorError, OutcomeUnknown, Refused
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd
from diskhb.mmp.binding import pending_names
from diskhb.mmp.fast_path import PeerInfo
from diskhb.mmp.loss import ACQUIRED, REFUSED, LossAction
from diskhb.mmp.release import How, plan_release
from diskhb.mmp.runner import Runner, StopFlag, raise_denied
from diskhb.mmp.steps import Claimant, who
from diskhb.runtime import monotonic_ms, new_generation, wall_ms
from diskhb.mmp.store import (
    BlockLocation,
    Target,
    init_device_block,
    open_device_target,
    open_region_target,
)

DEFAULT_INTERVAL_MS = timing.MMP_INTERVAL_MS_DEFAULT
RELEASE_WAIT_S = 30.0
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------
# Where: options shared by every command


def where_options(fn):
    fn = click.option("--offset", type=click.IntRange(0, None), default=None,
                      help="With --device: byte offset of the block.")(fn)
    fn = click.option("--device", "device", default=None, metavar="PATH",
                      help="A block made by 'mmp init' on any device or file (with --offset).")(fn)
    fn = click.option("--config", "config_path", default=None, metavar="FILE",
                      help="Node config: its disk regions, node id and [[resource]] tables.")(fn)
    fn = click.option("--region", default=None, metavar="PATH",
                      help="A formatted diskhb region (a device, a file or uuid:UUID).")(fn)
    return fn


def node_options(fn):
    fn = click.option("--run-dir", default=None, metavar="DIR",
                      help=f"Local locks and holder records [default: {DEFAULT_RUN_DIR} or the config's].")(fn)
    fn = click.option("--node-name", default=None, help="Our name in the block [default: the host name].")(fn)
    fn = click.option("--node-id", type=click.IntRange(1, None), default=None,
                      help="Our node id (ballot sector), 1..slots; from the config with --config.")(fn)
    return fn


class Ctx:
    """What the options name, resolved: targets, node identity, resource settings."""

    def __init__(self, region, config_path, device, offset, *, need_node: bool, node_id=None,
                 node_name=None, run_dir=None, resource: str | None = None, writable: bool = False):
        given = [x for x in (region, config_path, device) if x]
        if len(given) != 1:
            raise OperatorError("name exactly one of --region PATH, --config FILE or --device PATH --offset BYTES")
        if (device is None) != (offset is None):
            raise OperatorError("--device and --offset go together")
        self.cfg = None
        self.res_cfg = None
        paths: list[str] = []
        if config_path:
            from diskhb.config import load_config

            self.cfg = load_config(config_path)
            disks = [r for r in self.cfg.regions if r.type == "disk"]
            if not disks:
                raise OperatorError(f"{config_path}: no disk region configured; MMP blocks live on disk regions")
            self.res_cfg = next((r for r in self.cfg.resources if r.name == resource), None) if resource else None
            if self.res_cfg is not None and self.res_cfg.region:
                match = [r for r in disks if self.res_cfg.region in (r.path, r.name)]
                if not match:
                    raise OperatorError(f"{config_path}: resource {resource!r} names region"
                                        f" {self.res_cfg.region!r}, which is not a disk region of this config")
                paths = [match[0].path]
            else:
                paths = [r.path for r in disks]
            if node_id is not None and node_id != self.cfg.node.id:
                raise OperatorError(f"--node-id {node_id} contradicts {config_path} (node id {self.cfg.node.id})")
            node_id = self.cfg.node.id
            node_name = node_name or self.cfg.node.name
            run_dir = run_dir or self.cfg.node.run_dir
        elif region:
            paths = [region]
        if any(p.startswith("uuid:") for p in paths):  # to devices, in one scan (diskhb.regions.disk.devices)
            from diskhb.regions.disk.devices import resolve_paths

            resolved = resolve_paths(paths)
            paths = [resolved[p].path if p in resolved else p for p in paths]
        if need_node and node_id is None:
            raise OperatorError("this command writes ballots: give --node-id N (this node's id in the cluster)"
                                " or --config FILE")
        self.node_id = node_id
        self.node_name = node_name or socket.gethostname()[: mf.RESOURCE_NAME_BYTES_MAX] or "node"
        self.run_dir = run_dir or DEFAULT_RUN_DIR
        self.device, self.offset, self.paths, self.writable = device, offset, paths, writable

    def open(self, path: str | None = None) -> Target:
        if self.device is not None:
            return open_device_target(self.device, self.offset, writable=self.writable)
        return open_region_target(path or self.paths[0], writable=self.writable)

    def targets(self):
        if self.device is not None:
            yield self.open()
            return
        for p in self.paths:
            yield self.open(p)

    def check_node(self, t: Target) -> None:
        slots = t.blocks[0].slot_count
        if self.node_id is not None and not 1 <= self.node_id <= slots:
            raise OperatorError(f"{t.path}: node id {self.node_id} is beyond its {slots} ballot slots;"
                                f" use an id in 1..{slots}")


def _daemon(ctx: Ctx, path: str, node_id: int | None = None) -> tuple[str, dict] | None:
    """(control socket, snapshot) of a running daemon serving region `path` (and, if given,
    being node `node_id`), looked for in the run directory. Blocks given by --device belong
    to no region, so no daemon speaks for them."""
    from diskhb.control import find_daemon

    if ctx.device is not None:
        return None
    return find_daemon(path, ctx.run_dir, node_id)


def _peer_info_from_daemon(ctx: Ctx, t: Target):
    """The fast-path hook (diskhb.mmp.fast_path): what a running daemon's liveness knows of each
    node, asked afresh at every question (a --wait may outlast a holder's death).

    Without a daemon there is no view: every held block takes the classic path, which is
    always safe (and still refuses a live holder within one interval).
    """
    from diskhb.control import STATUS_TIMEOUT_S, ControlError, Peer, request
    from diskhb.core.types import NodeState, parse_hex_id

    found = _daemon(ctx, t.path)
    if found is None:
        return None
    sock = found[0]

    def info(node_id: int) -> PeerInfo | None:
        try:
            got = request(sock, Peer(node_id), STATUS_TIMEOUT_S)
            return PeerInfo(NodeState(got["state"]), generation=parse_hex_id(got.get("generation") or 0))
        except (ControlError, KeyError, ValueError, TypeError):
            return None  # the daemon went away: no view, the classic path

    return info


def _claimant(ctx: Ctx, t: Target, resource: str, interval_ms: int) -> Claimant:
    try:
        mf.check_resource_name(resource)
    except mf.BlockError as e:
        raise OperatorError(str(e)) from None
    if not mf.INTERVAL_MS_MIN <= interval_ms <= mf.INTERVAL_MS_MAX:
        raise OperatorError(f"--interval-ms {interval_ms} not in {mf.INTERVAL_MS_MIN}..{mf.INTERVAL_MS_MAX}")
    ctx.check_node(t)
    return Claimant(node_id=ctx.node_id, generation=new_generation(), holder_name=ctx.node_name,
                    resource=resource, interval_ms=interval_ms, ceiling_ms=timing.mmp_ceiling_ms(interval_ms),
                    device=os.path.basename(t.path)[: mf.DEVICE_NAME_BYTES_MAX])


def _runner(ctx: Ctx, t: Target, stop: StopFlag | None = None) -> Runner:
    from diskhb.mmp.local import ensure_run_dir

    run_dir = ensure_run_dir(ctx.run_dir)
    cancelled = stop.is_set if stop is not None else (lambda: False)
    return Runner(t, cancelled=cancelled, run_dir=run_dir)


def _install_stop() -> StopFlag:
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    return stop


def _err(msg: str) -> None:
    click.echo(msg, err=True)


# --------------------------------------------------------------------------------------------
# The group


@click.group("mmp")
def mmp() -> None:
    """Multi-mount protection: guard a shared-storage resource so only one node uses it."""


# -- status ----------------------------------------------------------------------------------


def _describe(loc: BlockLocation, view: mf.ResourceView, now_wall_ms: int) -> dict:
    d: dict = {"block": loc.index, "location": loc.label}
    if view.seq_error:
        d.update(resource=None, state="corrupt", error=view.seq_error)
        return d
    seq = view.seq
    if seq is None:
        names = sorted(pending_names(view))
        d.update(resource=names[0] if len(names) == 1 else None, state="pending" if view.ballots else "free")
        if view.ballots:
            d["pending"] = names
            d["error"] = None
        if view.ballot_errors:
            d["ballot_errors"] = {str(k): v for k, v in view.ballot_errors.items()}
        return d
    d.update(
        resource=seq.resource, state=seq.state, epoch=seq.epoch,
        seq=seq.seq, seq_hex=f"{seq.seq:#010x}", interval_ms=seq.interval_ms,
        holder=None if seq.holder_id == 0 else {"id": seq.holder_id, "name": seq.holder_name,
                                                 "generation": f"{seq.holder_generation:#x}"},
        updated_wall_ms=seq.wall_ms, age_s=round(max(0, now_wall_ms - seq.wall_ms) / 1000, 3),
        device=seq.device,
    )
    if view.max_lver > seq.epoch:
        d["ballot_in_progress"] = view.max_lver
    if view.ballot_errors:
        d["ballot_errors"] = {str(k): v for k, v in view.ballot_errors.items()}
    return d


def _table(rows: list[dict]) -> str:
    head = ["BLOCK", "RESOURCE", "STATE", "HOLDER", "EPOCH", "SEQ", "INTERVAL", "AGE"]
    out = [head]
    for r in rows:
        h = r.get("holder")
        state = r["state"] + (" (ballot running)" if r.get("ballot_in_progress") else "")
        out.append([
            "-" if r["block"] is None else str(r["block"]), r.get("resource") or "-", state,
            f"{h['name']} (id {h['id']})" if h else "-", str(r.get("epoch", "-")),
            r.get("seq_hex", "-") if r["state"] == "held" else r["state"].upper() if "seq" in r else "-",
            f"{r['interval_ms']} ms" if "interval_ms" in r else "-",
            f"{r['age_s']:.1f} s" if "age_s" in r else "-",
        ])
    widths = [max(len(row[i]) for row in out) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in out]
    for r in rows:
        if r.get("error") or r.get("ballot_errors"):
            lines.append(f"  block {r['block']}: {r.get('error') or r.get('ballot_errors')}")
    return "\n".join(lines)


@mmp.command("status")
@click.argument("resource", required=False)
@where_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target.")
def status_cmd(resource, region, config_path, device, offset, as_json):
    """Holder, epoch, seq, state and age of every MMP block (or of RESOURCE)."""
    ctx = Ctx(region, config_path, device, offset, need_node=False)
    found = False
    for t in ctx.targets():
        try:
            now = wall_ms()
            rows = [_describe(loc, view, now) for loc, view in Runner(t).views()]
        finally:
            t.close()
        if resource is not None:
            rows = [r for r in rows if r.get("resource") == resource or resource in r.get("pending", [])]
            found = found or bool(rows)
            if not rows:
                continue
        if as_json:
            click.echo(json.dumps({"path": t.path, "uuid": t.uuid.hex(), "resources": rows}, sort_keys=True))
        else:
            click.echo(f"{t.path}:")
            click.echo(_table(rows))
    if resource is not None and not found:
        raise OperatorError(f"unknown resource {resource!r}: no MMP block names it"
                            f" ({', '.join(ctx.paths) or ctx.device})")


# -- acquire / run ---------------------------------------------------------------------------


def _loss_action(ctx: Ctx, interval_ms: int, on_loss_command: str | None, remount_ro: str | None,
                 mountpoint: str | None = None) -> LossAction:
    kinds: list[str] = ["kill"]
    command, mnt = on_loss_command, remount_ro or mountpoint
    grace = max(1, interval_ms // 4)
    remount_timeout, command_timeout = timing.REMOUNT_TIMEOUT_MS_DEFAULT, timing.LOSS_COMMAND_TIMEOUT_MS_DEFAULT
    rc = ctx.res_cfg
    if rc is not None:
        kinds = list(rc.on_loss)
        command = command or rc.loss_command
        mnt = mnt or rc.mountpoint
        grace = rc.kill_grace_ms
        remount_timeout, command_timeout = rc.remount_timeout_ms, rc.loss_command_timeout_ms
    if command and "command" not in kinds:
        kinds.append("command")
    if remount_ro and "remount-ro" not in kinds:
        kinds.append("remount-ro")
    return LossAction(kinds=tuple(kinds), command=command, mountpoint=mnt, kill_mount_users=mnt is not None,
                      grace_ms=grace, timeout_ms=command_timeout, remount_timeout_ms=remount_timeout)


def _budget(loss: LossAction) -> int:
    return timing.loss_budget_ms(loss.kinds, kill_grace_ms=loss.grace_ms, remount_timeout_ms=loss.remount_timeout_ms,
                                 command_timeout_ms=loss.timeout_ms, mountpoint=loss.mountpoint is not None)


def _timing(make_loss, interval_ms: int) -> timing.MmpTiming:
    """The hold's numbers, refused (one line, naming the smallest interval that works: the
    default kill grace grows with the interval) if the loss action cannot end before another
    node may take over (timing HD-loss). make_loss(interval_ms) -> the LossAction it gets."""
    try:
        return timing.MmpTiming(interval_ms, _budget(make_loss(interval_ms)))
    except timing.TimingError as e:
        if not timing.MMP_INTERVAL_MS_MIN <= interval_ms <= timing.MMP_INTERVAL_MS_MAX:
            raise OperatorError(f"--interval-ms {e}") from None
        low, high = interval_ms, timing.MMP_INTERVAL_MS_MAX  # the budget grows slower than the interval
        if high < timing.min_mmp_interval_ms(_budget(make_loss(high))):
            raise OperatorError(f"--interval-ms {e}") from None
        while low + 1 < high:  # bisect for the smallest interval whose own loss action fits
            mid = (low + high) // 2
            if mid >= timing.min_mmp_interval_ms(_budget(make_loss(mid))):
                high = mid
            else:
                low = mid
        raise OperatorError(f"--interval-ms {interval_ms} leaves no room for the loss action"
                            f" ({_budget(make_loss(interval_ms))} ms with its grace and timeouts, which must end"
                            f" before another node may take over): use --interval-ms {high} or more, or shorten"
                            " the loss action's timeouts") from None


def _guard(ctx: Ctx, t: Target, runner: Runner, me: Claimant, tm: timing.MmpTiming, *, wait_s: float = 0,
           create: bool = False, allow_fsck=False, stale_self_ok=False, finish: int | None = None) -> gd.Guard:
    return gd.Guard(me, t.info, timing=tm, ledger=runner.ledger, rand=runner.rand, now_ms=monotonic_ms(),
                    wait_ms=int(wait_s * 1000), create=create or ctx.res_cfg is not None,
                    peer_info=_peer_info_from_daemon(ctx, t), allow_fsck=allow_fsck, stale_self_ok=stale_self_ok,
                    finish=finish, lock_key=runner.lock_key())


def _acquire(ctx: Ctx, t: Target, runner: Runner, guard: gd.Guard, stop: StopFlag):
    """Drive `guard` to a hold; exits 130 if interrupted, raises the refusal otherwise."""
    from diskhb.mmp import foreground

    got, lease, denied = foreground.acquire(runner, guard)
    if got is None:
        REFUSED.labels(guard.me.resource).inc()
        if stop.is_set() and denied is not None and "cancelled" in denied.reason:
            _err(f"diskhb: interrupted; {guard.me.resource} was not acquired")
            sys.exit(EXIT_INTERRUPTED)
        raise_denied(denied)
    ACQUIRED.labels(guard.me.resource).inc()
    return got, lease


def _interval(ctx: Ctx, interval_ms: int | None) -> int:
    if interval_ms is not None:
        return interval_ms
    if ctx.res_cfg is not None:
        return ctx.res_cfg.interval_ms
    return DEFAULT_INTERVAL_MS


def acquire_options(fn):
    fn = click.option("--mountpoint", default=None, metavar="PATH",
                      help="The resource's filesystem: on loss (or if this process freezes or dies) every"
                           " process using it is killed.")(fn)
    fn = click.option("--remount-ro", default=None, metavar="MOUNTPOINT",
                      help="On loss, also remount this filesystem read-only (kills its users first).")(fn)
    fn = click.option("--on-loss-command", default=None, metavar="CMD",
                      help="On loss, also run this shell command (DISKHB_MMP_* in its environment).")(fn)
    fn = click.option("--create", is_flag=True, help="Bind a new resource name to a free MMP block.")(fn)
    fn = click.option("--interval-ms", type=int, default=None,
                      help=f"Update interval while held [default: {DEFAULT_INTERVAL_MS}, or the config's].")(fn)
    fn = click.option("--wait", "wait_s", type=click.FloatRange(0, 86400), default=0.0, show_default=True,
                      help="Keep trying this many seconds while the resource is held elsewhere.")(fn)
    return fn


def _holding(ctx: Ctx, runner: Runner, guard: gd.Guard, stop: StopFlag, loss: LossAction, enforcer, child=None) -> int:
    from diskhb.mmp import foreground
    from diskhb.mmp.local import remove_holder, write_holder

    me = guard.me
    write_holder(ctx.run_dir, guard.loc, {"pid": os.getpid(), "generation": me.generation, "resource": me.resource,
                                          "node_id": me.node_id, "epoch": guard.epoch})
    try:
        return foreground.hold(runner, guard, stop=stop, loss=loss, child=child, enforcer=enforcer, say=_err)
    finally:
        remove_holder(ctx.run_dir, guard.loc, me.generation)


def _enforcer(loss: LossAction, lease: gd.Lease, *, pgid: int | None, resource: str):
    """The hold's lease enforcer, if it has something to stop (a command, a mountpoint)."""
    from diskhb.mmp.sentinel import Enforcer, enforcer_budget_ms

    if pgid is None and loss.mountpoint is None:
        return None
    budget = enforcer_budget_ms(loss.mountpoint is not None, "remount-ro" in loss.kinds, loss.remount_timeout_ms)
    return Enforcer.start(lease.takeover_ms - budget, pgid=pgid, mountpoint=loss.mountpoint,
                          remount_ro=loss.mountpoint is not None and "remount-ro" in loss.kinds, resource=resource,
                          remount_timeout_ms=loss.remount_timeout_ms)


def _daemon_for(ctx: Ctx, t: Target) -> tuple[str, dict] | None:
    """The daemon of THIS node, when the command names that node's config: the daemon then
    picks the same region for the resource as we do (its [[resource]] table, else its first
    disk region). With --region or --device the command's own block is used, never handed on:
    a request carries no path, and binding a name on another region would make two guards."""
    if ctx.cfg is None:
        return None
    return _daemon(ctx, t.path, ctx.node_id)


def _ask(sock: str, line, timeout_s: float, what: str) -> dict:
    """One control request; the daemon's refusal becomes ours with its exit code."""
    from diskhb.control import ControlError, request

    try:
        out = request(sock, line, timeout_s)
    except ControlError as e:
        raise OutcomeUnknown(f"{what}: no answer from the daemon ({e}); it may still act on the request:"
                             f" see 'diskhb mmp status {what}'") from None
    if not out.get("ok"):
        err = str(out.get("error") or out)
        raise (Refused(err) if out.get("exit") == 1 else OperatorError(err))
    return out


# Longest a daemon acquisition can take beyond --wait: one classic watch of the slowest
# interval a block may carry (2 x max + 1 s), plus the ballot.
DAEMON_ACQUIRE_SLACK_S = (2 * mf.INTERVAL_MS_MAX + 1000) / 1000 + 30


@mmp.command("acquire")
@click.argument("resource")
@where_options
@node_options
@acquire_options
@click.option("--foreground", is_flag=True,
              help="Hold it in this process even when this node's daemon runs.")
@click.option("--daemon", "daemon_only", is_flag=True,
              help="Only through this node's daemon (with --config): refuse (exit 1) when none answers,"
                   " instead of holding in the foreground (what scripts and resource agents want).")
def acquire_cmd(resource, region, config_path, device, offset, node_id, node_name, run_dir, wait_s,
                interval_ms, create, on_loss_command, remount_ro, mountpoint, foreground, daemon_only):
    """Acquire RESOURCE: this node's daemon holds it, or this process does in the foreground.

    With this node's daemon running (found through its control socket in the run directory),
    the daemon acquires and keeps holding RESOURCE, with the [[resource]] settings of its
    config; the command returns 0 once it is held. The block then carries the daemon's
    generation: peers refuse at once while the daemon lives and take over at once after it
    left cleanly. 'diskhb mmp release RESOURCE' asks the daemon to write CLEAN.

    Without a daemon (or with --foreground) nobody else would keep the block's seq moving, so
    this command stays and bumps it every interval; SIGINT/SIGTERM or 'diskhb mmp release
    RESOURCE' writes CLEAN and exits 0. If the resource is lost meanwhile, the loss action
    runs and the exit code is 3. To guard a command instead, use 'diskhb mmp run RESOURCE -- CMD'.
    """
    if daemon_only and (foreground or not config_path):
        raise OperatorError("--daemon goes with --config FILE (this node's daemon) and without --foreground")
    ctx = Ctx(region, config_path, device, offset, need_node=True, node_id=node_id, node_name=node_name,
              run_dir=run_dir, resource=resource, writable=True)
    t = ctx.open()
    try:
        daemon = None if foreground else _daemon_for(ctx, t)
        if daemon is None and daemon_only:
            raise Refused(f"{resource}: no daemon of node {ctx.node_id} answers in {ctx.run_dir} (start it:"
                          " 'systemctl start diskhb'); nothing was acquired")
        if daemon is not None:
            if on_loss_command or remount_ro or mountpoint or interval_ms is not None:
                raise OperatorError("this node's daemon holds resources with the interval and loss action of"
                                    " its config's [[resource]] table; put them there, or add --foreground")
            _acquire_in_daemon(daemon, resource, wait_s=wait_s, create=create)
            return
        stop = _install_stop()
        interval_ms = _interval(ctx, interval_ms)
        loss = _loss_action(ctx, interval_ms, on_loss_command, remount_ro, mountpoint)
        tm = _timing(lambda i: _loss_action(ctx, i, on_loss_command, remount_ro, mountpoint), interval_ms)
        runner = _runner(ctx, t, stop)
        guard = _guard(ctx, t, runner, _claimant(ctx, t, resource, interval_ms), tm, wait_s=wait_s, create=create)
        got, lease = _acquire(ctx, t, runner, guard, stop)
        _err(f"acquired {resource} on {got.location}: epoch {got.epoch} ({got.note}); holding until"
             " interrupted or 'diskhb mmp release'")
        enforcer = _enforcer(loss, lease, pgid=None, resource=resource)
        sys.exit(_holding(ctx, runner, guard, stop, loss, enforcer))
    finally:
        t.close()


def _acquire_in_daemon(daemon: tuple[str, dict], resource: str, *, wait_s: float, create: bool) -> None:
    sock, snap = daemon
    pid = (snap.get("node") or {}).get("pid")
    try:
        from diskhb.control import Acquire

        out = _ask(sock, Acquire(resource, int(wait_s * 1000), create),
                   wait_s + DAEMON_ACQUIRE_SLACK_S, resource)
    except KeyboardInterrupt:
        # The daemon goes on with the request: say so rather than pretend nothing happened.
        _err(f"diskhb: interrupted; the daemon (pid {pid}) may still acquire {resource}:"
             f" see 'diskhb mmp status {resource}', 'diskhb mmp release {resource}'")
        sys.exit(EXIT_INTERRUPTED)
    note = f" ({out['note']})" if out.get("note") else ""
    _err(f"acquired {resource}{' on ' + out['location'] if out.get('location') else ''}: epoch {out['epoch']}"
         f"{note}; held by the daemon (pid {pid}) until 'diskhb mmp release {resource}'")


@mmp.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("resource")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@where_options
@node_options
@acquire_options
def run_cmd(resource, command, region, config_path, device, offset, node_id, node_name, run_dir, wait_s,
            interval_ms, create, on_loss_command, remount_ro, mountpoint):
    """Hold RESOURCE while COMMAND runs (like flock(1)); exit with its exit code.

    COMMAND runs in its own process group with DISKHB_MMP_RESOURCE and DISKHB_MMP_EPOCH (the
    fencing token) in its environment. If the resource is lost, the group gets SIGTERM (then
    SIGKILL), the loss action runs and the exit code is 3. A lease enforcer process kills the
    group (and the users of --mountpoint) should this guard freeze or die.

    Not for mount(8): it returns at once and the resource is released while the filesystem
    stays mounted (a warning says so). Guard a mount with a daemon-held resource instead: its
    mountpoint in [[resource]], 'diskhb mmp acquire RESOURCE --config FILE', then mount.
    """
    from diskhb.mmp import foreground, mounts

    ctx = Ctx(region, config_path, device, offset, need_node=True, node_id=node_id, node_name=node_name,
              run_dir=run_dir, resource=resource, writable=True)
    stop = _install_stop()
    interval_ms = _interval(ctx, interval_ms)
    def with_kill(i: int) -> LossAction:  # a lost command's group is always killed
        loss = _loss_action(ctx, i, on_loss_command, remount_ro, mountpoint)
        return LossAction(kinds=tuple(dict.fromkeys(("kill",) + loss.kinds)), command=loss.command,
                          mountpoint=loss.mountpoint, kill_mount_users=loss.kill_mount_users, grace_ms=loss.grace_ms,
                          timeout_ms=loss.timeout_ms, remount_timeout_ms=loss.remount_timeout_ms)

    loss = _loss_action(ctx, interval_ms, on_loss_command, remount_ro, mountpoint)
    tm = _timing(with_kill, interval_ms)
    t = ctx.open()
    try:
        runner = _runner(ctx, t, stop)
        me = _claimant(ctx, t, resource, interval_ms)
        guard = _guard(ctx, t, runner, me, tm, wait_s=wait_s, create=create)
        got, lease = _acquire(ctx, t, runner, guard, stop)
        env = {**os.environ, "DISKHB_MMP_RESOURCE": resource, "DISKHB_MMP_EPOCH": str(got.epoch),
               "DISKHB_MMP_HOLDER": f"{me.node_id}:{me.generation:x}"}
        mounted_before = mounts.snapshot(list(command))
        try:
            child = foreground.spawn(list(command), env)
        except OSError as e:
            guard.release()
            runner.drive(guard)
            raise OperatorError(f"cannot run {command[0]!r}: {e.strerror}; {resource} was released") from None
        enforcer = _enforcer(loss, lease, pgid=child.pid, resource=resource)
        code = _holding(ctx, runner, guard, stop, loss, enforcer, child=child)
        if code == 0:  # a mount(8) that returned: the filesystem outlives its guard
            left = mounts.left_mounted(list(command), mounted_before)
            if left:
                _err(mounts.warning(resource, os.path.basename(command[0]), left))
        sys.exit(code)
    finally:
        t.close()


# -- release / fsck / clear ------------------------------------------------------------------


@mmp.command("release")
@click.argument("resource")
@where_options
@node_options
@click.option("--force", is_flag=True,
              help="The holder is this node under an earlier generation and that process is gone:"
                   " take it over (only if its seq stands still for the classic wait) and release it.")
@click.option("--wait", "wait_s", type=click.FloatRange(0, 3600), default=RELEASE_WAIT_S, show_default=True,
              help="How long to wait for the holding process to write CLEAN.")
def release_cmd(resource, region, config_path, device, offset, node_id, node_name, run_dir, force, wait_s):
    """Release RESOURCE held by a diskhb process of this node (it writes CLEAN)."""
    from diskhb.mmp.local import read_holder

    ctx = Ctx(region, config_path, device, offset, need_node=True, node_id=node_id, node_name=node_name,
              run_dir=run_dir, resource=resource, writable=force)
    t = ctx.open()
    try:
        daemon = _daemon_for(ctx, t)
        if daemon is not None and (any(h.get("resource") == resource for h in daemon[1].get("mmp", []))
                                   or resource in (daemon[1].get("mmp_acquiring") or [])):  # cancels it
            # The daemon waits up to its own RELEASE_WAIT_S for the CLEAN write; we outwait it.
            from diskhb.control import Release

            out = _ask(daemon[0], Release(resource), max(wait_s, RELEASE_WAIT_S) + 5, resource)
            if out.get("outcome") == "lost":
                raise Refused(f"{resource} was lost while the daemon held it (epoch {out.get('epoch')});"
                              " its loss action ran; nothing to release")
            if out.get("outcome") != "released":
                raise Refused(f"{resource}: the daemon could not confirm its CLEAN write ({out.get('outcome')});"
                              " see 'diskhb mmp status' and the daemon's log")
            _err(f"released {resource} (was epoch {out.get('epoch')}, held by the daemon)")
            return
        runner = Runner(t)
        found = runner.find(resource)
        if found is None:
            raise OperatorError(f"{t.path}: unknown resource {resource!r}; see 'diskhb mmp status'")
        seq, loc = found.view.seq, found.loc
        rec = read_holder(ctx.run_dir, loc)
        plan = plan_release(resource, seq, node_id=ctx.node_id, holder_record=rec, force=force,
                            holder_alive=rec is not None and _pid_alive(rec.get("pid")))
        if plan.how is How.NOTHING:
            _err(plan.text)
            return
        if plan.how is How.REFUSE:
            raise Refused(plan.text)
        if plan.how is How.SIGNAL:
            os.kill(plan.pid, signal.SIGTERM)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                view = runner.find(resource).view
                if view.seq is None or view.seq.identity[2:] != seq.identity[2:] or view.seq.state != "held":
                    _err(f"released {resource} (was epoch {seq.epoch}, process {plan.pid})")
                    return
                time.sleep(0.05)
            raise Refused(f"{resource}: process {plan.pid} did not release within {wait_s:g} s")
    finally:
        t.close()
    # --force: a full acquisition that watches our stale generation like any holder, then CLEAN.
    ctx.writable = True
    epoch, _ = _take_and_mark(ctx, resource, mf.SEQ_CLEAN, interval_ms=seq.interval_ms, stale_self_ok=True)
    _err(f"released {resource}: took over the stale generation {seq.holder_generation:#x} (epoch"
         f" {epoch}) and wrote CLEAN")


@mmp.command("check")
@click.argument("resource")
@click.option("--config", "config_path", required=True, metavar="FILE", help="This node's daemon config.")
@click.option("--config-only", is_flag=True,
              help="Only check that FILE loads and declares RESOURCE in a [[resource]] table (no daemon, no disk).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: code, word, text.")
def check_cmd(resource, config_path, config_only, as_json):
    """Does this node hold RESOURCE through its daemon, with a fresh lease? (What the Pacemaker
    resource agent ocf:diskhb:guard monitors.) Prints one line, 'WORD: what it found'.

    \b
    Exit 0 (held): the daemon answers and renews it before its loss deadline.
    Exit 1 (free, down): nothing of this node holds it: the daemon does not (or none runs)
           and its block names another node or nobody.
    Exit 3 (expired, lost, releasing, acquiring, process, stale, silent, unknown): not held
           healthily and not cleanly stopped either; 'stale' and 'silent' (the block names this
           node, no answering daemon renews it) are ended by 'mmp release --force'.
    Exit 2: bad input (config, resource name). The rules: diskhb/mmp/check.py (CK1-CK8).
    """
    from diskhb.control import STATUS_TIMEOUT_S, ControlError, Status, node_sockets, request
    from diskhb.mmp import check as ck
    from diskhb.mmp.local import read_holder

    try:
        mf.check_resource_name(resource)
    except mf.BlockError as e:
        raise OperatorError(str(e)) from None
    ctx = Ctx(None, config_path, None, None, need_node=False, resource=resource)
    if config_only:
        if ctx.res_cfg is None:
            raise OperatorError(f"{config_path}: no [[resource]] table names {resource!r}; declare it there (name,"
                                " mountpoint, on_loss) so the daemon holds it with its loss action")
        click.echo(f"ok: {config_path} declares {resource} (node {ctx.node_id}, {', '.join(ctx.paths)})")
        return
    daemon, snap = ck.DAEMON_GONE, None
    for sock in [p for p in node_sockets(ctx.run_dir, ctx.cfg.cluster.name, ctx.node_id) if os.path.exists(p)]:
        try:
            snap = request(sock, Status(), STATUS_TIMEOUT_S)
        except ControlError as e:
            if not e.gone:
                daemon = ck.DAEMON_SILENT
            continue
        daemon = ck.DAEMON_ANSWERED
        break
    got: dict = {}
    if ck.needs_block(resource, daemon=daemon, snapshot=snap):
        got = _check_block(ctx, resource, read_holder)
    verdict = ck.judge(resource, ctx.node_id, daemon=daemon, snapshot=snap, now_ms=monotonic_ms(), **got)
    if as_json:
        click.echo(json.dumps({"resource": resource, "code": verdict.code, "word": verdict.word,
                               "text": verdict.text}, sort_keys=True))
    else:
        click.echo(verdict.line())
    sys.exit(verdict.code)


def _check_block(ctx: Ctx, resource: str, read_holder) -> dict:
    """What `check` learns from the disk: the block naming `resource` (on this node's regions),
    or why it could not be read, and a live local process holding it (its holder record)."""
    from diskhb.mmp import check as ck

    opened = 0
    last_open_error = None
    for path in ctx.paths:
        try:
            t = open_region_target(path, writable=False)
        except OperatorError as e:
            last_open_error = str(e)
            continue
        opened += 1
        try:
            found = Runner(t).find(resource)
        except OperatorError as e:
            return {"block_error": str(e)}
        finally:
            t.close()
        if found is None:
            continue
        seq = found.view.seq
        block = ck.Block(state=seq.state, holder_id=seq.holder_id, holder_name=seq.holder_name,
                         generation=seq.holder_generation, epoch=seq.epoch)
        rec = read_holder(ctx.run_dir, found.loc)
        pid = rec.get("pid") if rec is not None and rec.get("generation") == seq.holder_generation else None
        return {"block": block, "process_pid": pid if _pid_alive(pid) else None}
    if opened == 0 and last_open_error is not None:
        return {"open_error": last_open_error}
    if last_open_error is not None:  # the name may be bound on the region we could not open
        return {"block_error": last_open_error}
    return {}


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_and_mark(ctx: Ctx, resource: str, final: int, *, interval_ms: int = DEFAULT_INTERVAL_MS,
                   allow_fsck: bool = False, stale_self_ok: bool = False) -> tuple[int, str]:
    """Acquire RESOURCE through the ballot and at once write `final` (CLEAN or FSCK) over it."""
    t = ctx.open()
    stop = _install_stop()
    try:
        runner = _runner(ctx, t, stop)
        tm = timing.MmpTiming(interval_ms, 0)  # held for one write: nothing of ours to stop
        guard = _guard(ctx, t, runner, _claimant(ctx, t, resource, interval_ms), tm, allow_fsck=allow_fsck,
                       stale_self_ok=stale_self_ok, finish=final)
        events: list = []
        runner.drive(guard, on_event=events.append)
        got = next((e for e in events if isinstance(e, gd.GotIt)), None)
        gone = next((e for e in events if isinstance(e, gd.Gone)), None)
        if got is None:
            denied = next((e for e in events if isinstance(e, gd.Denied)), None)
            if stop.is_set():
                _err("diskhb: interrupted; nothing was marked")
                sys.exit(EXIT_INTERRUPTED)
            raise_denied(denied)
        if gone is None or not gone.released:
            raise Refused(f"{resource}: acquired (epoch {got.epoch}) but could not mark it"
                          f" ({gone.lost if gone else 'interrupted'}); see 'diskhb mmp status'")
        return got.epoch, got.location
    finally:
        t.close()


@mmp.command("fsck")
@click.argument("resource")
@where_options
@node_options
def fsck_cmd(resource, region, config_path, device, offset, node_id, node_name, run_dir):
    """Mark RESOURCE FSCK (repair in progress): nobody may acquire it until 'mmp clear'.

    Acquires it first (so it is never marked under a live holder), then writes the FSCK
    sentinel instead of a running seq, as e2fsck does for ext4.
    """
    ctx = Ctx(region, config_path, device, offset, need_node=True, node_id=node_id, node_name=node_name,
              run_dir=run_dir, resource=resource, writable=True)
    epoch, label = _take_and_mark(ctx, resource, mf.SEQ_FSCK, allow_fsck=False)
    _err(f"{resource} on {label} marked FSCK (epoch {epoch}); 'diskhb mmp clear {resource}' ends it")


@mmp.command("clear")
@click.argument("resource")
@where_options
@node_options
def clear_cmd(resource, region, config_path, device, offset, node_id, node_name, run_dir):
    """End an FSCK mark: take RESOURCE over through the ballot and write CLEAN."""
    ctx = Ctx(region, config_path, device, offset, need_node=True, node_id=node_id, node_name=node_name,
              run_dir=run_dir, resource=resource, writable=True)
    t = ctx.open()
    try:
        found = Runner(t).find(resource)
    finally:
        t.close()
    if found is None:
        raise OperatorError(f"unknown resource {resource!r}; see 'diskhb mmp status'")
    if found.view.seq.state != "fsck":
        raise Refused(f"{resource} is not marked FSCK (it is {found.view.seq.state}); nothing was written")
    epoch, label = _take_and_mark(ctx, resource, mf.SEQ_CLEAN, allow_fsck=True)
    _err(f"{resource} on {label} is CLEAN again (epoch {epoch})")


# -- init ------------------------------------------------------------------------------------


@mmp.command("init")
@click.argument("resource")
@click.option("--device", required=True, metavar="PATH", help="Device or file to put the block on.")
@click.option("--offset", type=click.IntRange(0, None), required=True, help="Byte offset (sector aligned).")
@click.option("--slots", type=click.IntRange(1, mf.SLOT_COUNT_MAX), default=64, show_default=True,
              help="Ballot sectors (node ids 1..N) after the block.")
@click.option("--sector-size", type=click.Choice(["512", "4096"]), default=None,
              help="Sector size; default: the device's, or 512 for a file.")
@click.option("--interval-ms", type=int, default=DEFAULT_INTERVAL_MS, show_default=True,
              help="The update interval recorded in the new CLEAN block (shown by 'mmp status'); a"
                   " holder writes its own interval when it acquires the block.")
@click.option("--force", is_flag=True, help="Overwrite bytes that are not all zero.")
def init_cmd(resource, device, offset, slots, sector_size, interval_ms, force):
    """Create a standalone MMP block for RESOURCE at OFFSET of DEVICE (1 + slots sectors)."""
    import uuid as uuidlib

    if not mf.INTERVAL_MS_MIN <= interval_ms <= mf.INTERVAL_MS_MAX:
        raise OperatorError(f"--interval-ms {interval_ms} not in {mf.INTERVAL_MS_MIN}..{mf.INTERVAL_MS_MAX}")
    block = init_device_block(device, offset, resource=resource, slot_count=slots,
                              sector_size=int(sector_size) if sector_size else None, interval_ms=interval_ms,
                              holder_name="", uuid=uuidlib.uuid4().bytes, wall_ms=wall_ms(), force=force)
    _err(f"{device}@{offset}: MMP block for {resource!r} created ({slots} ballot slots of"
         f" {block.sector_size} bytes, {(1 + slots) * block.sector_size} bytes in all), CLEAN")


# -- inspect (ext4) --------------------------------------------------------------------------


@mmp.command("inspect")
@click.argument("device")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: device, code, summary, waited_s, mmp_block and mmp (seq, seq_hex,"
                   " state, time_s, nodename, bdevname, check_interval_s, checksum_ok).")
@click.option("--no-wait", is_flag=True, help="Do not watch a running seq: report it as in use at once.")
def inspect_cmd(device, as_json, no_wait):
    """Read an ext4 filesystem's MMP block and judge it like e2mmpstatus.

    Exit 0: safe to mount (CLEAN, or a seq that stood still for the whole check); 1: in use
    (a seq that moved, FSCK, unknown seq, bad checksum); 2: error (not ext4, no MMP, I/O).
    """
    code, doc = _inspect(device, no_wait)
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        click.echo(f"{device}: {doc['summary']}")
        m = doc.get("mmp")
        if m:
            click.echo(f"  seq {m['seq_hex']} ({m['state']}), node '{m['nodename']}', device '{m['bdevname']}',"
                       f" updated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(m['time_s']))},"
                       f" check interval {m['check_interval_s']} s, MMP block {doc['mmp_block']}")
    sys.exit(code)


def _inspect(device: str, no_wait: bool) -> tuple[int, dict]:
    from diskhb.mmp import ext4
    from diskhb.regions.disk.blockio import BlockDevice
    from diskhb.mmp.store import BlockStore, io_error

    def error_text(e: Exception) -> str:
        text = str(e)  # open errors name the path already; the CLI prints it first
        return "error: " + (text[len(device) + 2:] if text.startswith(f"{device}: ") else text)

    try:
        store = BlockStore(BlockDevice.open(device, writable=False, sector_size=512))
    except OperatorError as e:
        return 2, {"device": device, "code": 2, "summary": error_text(e)}

    def read(offset: int, length: int) -> bytes:
        s = store.sector_size
        start = offset - offset % s
        end = -(-(offset + length) // s) * s
        try:
            data = store.read(start, end - start)
        except OSError as e:
            raise io_error(device, e) from None
        return data[offset - start: offset - start + length]

    doc: dict = {"device": device}
    try:
        try:
            if store.size_bytes < ext4.SUPERBLOCK_OFFSET + ext4.SUPERBLOCK_BYTES:
                raise ext4.Ext4Error(f"too small ({store.size_bytes} bytes) to hold an ext4 superblock")
            sb = ext4.parse_super(read(ext4.SUPERBLOCK_OFFSET, ext4.SUPERBLOCK_BYTES))
            off, length = ext4.mmp_location(sb)
            if off + length > store.size_bytes:
                raise ext4.Ext4Error("the MMP block lies beyond the end of the device")
            doc["mmp_block"] = sb.mmp_block
            mmp_ = ext4.parse_mmp(read(off, length), sb)
        except (ext4.Ext4Error, OperatorError) as e:
            doc.update(code=2, summary=error_text(e))
            return 2, doc
        verdict = ext4.first_verdict(mmp_)
        if verdict is None:
            if no_wait:
                verdict = ext4.Verdict(1, f"in use: seq {mmp_.seq:#x} by '{mmp_.nodename}' (not watched)", mmp_)
            else:
                # e2mmpstatus sleeps the whole wait and re-reads once; we re-read every second and
                # answer "in use" at the first change (same verdicts, sooner when in use).
                wait = ext4.wait_s(sb, mmp_)
                t0 = time.monotonic()
                while verdict is None:
                    time.sleep(min(1.0, max(0.0, t0 + wait - time.monotonic())))
                    try:
                        again = ext4.parse_mmp(read(off, length), sb)
                    except (ext4.Ext4Error, OperatorError) as e:
                        verdict = ext4.Verdict(2, error_text(e), mmp_, time.monotonic() - t0)
                        break
                    verdict = ext4.reread_verdict(mmp_, again, time.monotonic() - t0, wait)
        verdict = ext4.final_verdict(sb, verdict)
        m = verdict.mmp
        doc.update(code=verdict.code, summary=verdict.summary, waited_s=round(verdict.waited_s, 3))
        doc["superblock_checksum_ok"] = sb.super_csum_ok
        if m is not None:
            doc["mmp"] = {"seq": m.seq, "seq_hex": f"{m.seq:#010x}", "state": m.state, "time_s": m.time_s,
                          "nodename": m.nodename, "bdevname": m.bdevname, "check_interval_s": m.check_interval_s,
                          "checksum_ok": m.checksum_ok}
        return verdict.code, doc
    finally:
        store.close()
