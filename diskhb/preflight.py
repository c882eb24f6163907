"""The checks a daemon makes before it beats, shared with `diskhb run --check`.

The daemon calls them as it starts (each raises OperatorError, one line); `run --check` calls
every one it can without starting anything and prints one line per check: superblocks are
read, nothing is written, no watchdog is opened (opening one arms it), no socket is bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from diskhb.config import Config, load_config
from diskhb.core import timing
from diskhb.errors import OperatorError
from diskhb.regions.disk import format as fmt


@dataclass(frozen=True, slots=True)
class Timing:
    cluster: str
    interval_ms: int
    dead_ms: int
    io_timeout_ms: int
    watchdog_ms: int = 0  # the cluster's (superblock); 0: none


def superblock_timing(sb: fmt.Superblock) -> Timing:
    return Timing(sb.cluster, sb.interval_ms, sb.dead_ms, sb.io_timeout_ms, sb.watchdog_ms)


def regions_agree(timings: list[tuple[str, Timing]]) -> Timing:
    """Every disk region of a cluster is formatted alike: the first one's timing."""
    first_path, first = timings[0]
    for path, t in timings[1:]:
        if t != first:
            raise OperatorError(
                f"{path}: cluster/timing {t.cluster}/{t.interval_ms}/{t.dead_ms} ms differs from"
                f" {first_path} ({first.cluster}/{first.interval_ms}/{first.dead_ms} ms);"
                " every region of a cluster must be formatted alike")
    return first


def links_timing(cfg: Config) -> Timing:
    """Without a disk region, [cluster] gives the timing."""
    want = cfg.cluster
    if want.name is None or want.interval_ms is None or want.dead_ms is None:
        raise OperatorError(f"{cfg.path}: without a disk region, [cluster] needs name, interval_ms and dead_ms")
    io_timeout = timing.default_io_timeout_ms(want.interval_ms, want.dead_ms)
    try:
        timing.check_heartbeat_timing(want.interval_ms, want.dead_ms, io_timeout)
    except timing.TimingError as e:
        raise OperatorError(f"{cfg.path}: [cluster]: {e}") from None
    return Timing(want.name, want.interval_ms, want.dead_ms, io_timeout)


def config_agrees(cfg: Config, t: Timing) -> None:
    """[cluster] keys, when given, are a safety cross-check against the regions."""
    want = cfg.cluster
    if want.name is not None and want.name != t.cluster:
        raise OperatorError(f"{cfg.path}: cluster.name is {want.name!r} but the region belongs to cluster"
                            f" {t.cluster!r}; fix the config or use the right device")
    for key, value in (("interval_ms", want.interval_ms), ("dead_ms", want.dead_ms)):
        if value is not None and value != getattr(t, key):
            raise OperatorError(f"{cfg.path}: cluster.{key} = {value} disagrees with the region's"
                                f" {getattr(t, key)}; every node must use the region's timing (remove the key"
                                " or reformat)")


def cluster_watchdog(cfg: Config, t: Timing) -> None:
    """This node's [watchdog] resets it no later than the cluster's peers count on."""
    try:
        timing.check_watchdog_timing(t.watchdog_ms, cfg.watchdog.timeout_s * 1000 if cfg.watchdog else None)
    except timing.TimingError as e:
        raise OperatorError(f"{cfg.path}: {e}") from None


def resource_region(cfg: Config, rc, mmp_regions: dict[str, str], specs: dict[str, str] | None = None) -> str | None:
    """The name of the disk region (of `mmp_regions`: name -> path, those with MMP blocks) whose
    blocks hold resource `rc`; None when no region has any. `specs`: name -> the path as
    configured (a uuid: path resolves to another device path)."""
    if not mmp_regions:
        return None
    if rc.region:
        for name, path in mmp_regions.items():
            if rc.region in (name, path, (specs or {}).get(name)):
                return name
        raise OperatorError(f"{cfg.path}: resource {rc.name!r} names region {rc.region!r}, not a disk"
                            " region of this daemon with MMP blocks")
    return next(iter(mmp_regions))


# -- diskhb run --check ----------------------------------------------------------------------------


def run_checks(config_path: str) -> Iterator[tuple[bool, str]]:
    """(ok, one line) per check, in the daemon's start-up order; stops where nothing further can
    be judged (no config, no cluster timing)."""
    from diskhb.regions.disk.region import check_slot, open_region
    from diskhb.watchdog import check_timeout

    def check(what: str, fn: Callable[[], str | None]) -> tuple[bool, str]:
        try:
            detail = fn()
        except OperatorError as e:
            return False, f"{what}: {e}"
        return True, what + (f": {detail}" if detail else "")

    cfg: list[Config] = []

    def load() -> str:
        cfg.append(load_config(config_path))
        c = cfg[0]
        return (f"node {c.node.name} (id {c.node.id}), {len(c.regions)} region(s), {len(c.resources)}"
                f" resource(s)")

    ok, line = check(f"config {config_path}", load)
    yield ok, line
    if not ok:
        return
    c = cfg[0]
    timings: list[tuple[str, Timing]] = []
    mmp_regions: dict[str, str] = {}
    for rc in c.disk_regions:
        def read(rc=rc) -> str:
            from diskhb.regions.disk.devices import resolve_path

            dev, sb = open_region(resolve_path(rc.path), writable=False)
            dev.close()
            check_slot(rc.path, c.node.id, sb)
            timings.append((rc.path, superblock_timing(sb)))
            if sb.mmp_resources:
                mmp_regions[rc.name] = rc.path
            return (f"cluster {sb.cluster}, {sb.slot_count} slots, interval {sb.interval_ms} ms, dead"
                    f" {sb.dead_ms} ms, {sb.mmp_resources} MMP blocks"
                    + (f", watchdog {sb.watchdog_ms / 1000:g} s" if sb.watchdog_ms else ", no cluster watchdog"))
        yield check(f"region {rc.name}", read)
    for rc in c.regions:
        if rc.type != "disk":
            yield check(f"region {rc.name}: key", lambda rc=rc: _key(rc.key))
    if len(timings) != len(c.disk_regions):
        return  # an unreadable region: its timing is unknown
    t: list[Timing] = []

    def agree() -> str:
        t.append(regions_agree(timings) if timings else links_timing(c))
        config_agrees(c, t[0])
        return f"cluster {t[0].cluster}, interval {t[0].interval_ms} ms, dead {t[0].dead_ms} ms"

    ok, line = check("cluster timing", agree)
    yield ok, line
    if not ok:
        return

    def watchdog() -> str:
        cluster_watchdog(c, t[0])
        if c.watchdog is None:
            return "none configured, none required"
        check_timeout(c.watchdog.timeout_s, t[0].interval_ms)
        if not os.path.exists(c.watchdog.device):
            raise OperatorError(f"watchdog {c.watchdog.device}: not found")
        cluster = f"the cluster's {t[0].watchdog_ms / 1000:g} s" if t[0].watchdog_ms else "no cluster watchdog"
        return f"{c.watchdog.device}, timeout {c.watchdog.timeout_s} s (at most {cluster}; not opened)"

    yield check("watchdog", watchdog)
    for rc in c.resources:
        def where(rc=rc) -> str:
            name = resource_region(c, rc, mmp_regions)
            if name is None:
                raise OperatorError(f"no disk region with MMP blocks: {rc.name} cannot be acquired (format a"
                                    " region with --mmp-resources N)")
            return (f"on {name}, interval {rc.interval_ms} ms, loss action {'+'.join(rc.on_loss)} within"
                    f" {rc.loss_budget_ms} ms")
        yield check(f"resource {rc.name}", where)


def _key(path: str) -> str:
    from netpath.keys import load_key_file

    ring = load_key_file(path)
    return f"{path}: key ids {', '.join(map(str, ring.ids))}"
