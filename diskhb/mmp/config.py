"""[[resource]] tables of the node config: the MMP resources this node may hold.

    [[resource]]
    name = "db"                 # resource name (1..64 bytes, no spaces or '/')
    region = "/dev/disk/by-id/..."   # optional: a disk region's path (or uuid:...) or name [default: the first]
    interval_ms = 1000          # update interval while held (adaptive upwards on slow I/O)
    on_loss = ["kill", "command"]    # any of kill, command, remount-ro, none [default: kill]
    loss_command = "/usr/local/sbin/stop-db"
    mountpoint = "/srv/db"      # for remount-ro, and for kill: its users (fuser -km)
    kill_grace_ms = 500         # SIGTERM -> SIGKILL [default: interval / 2]
    remount_timeout_ms = 1000   # remount-ro must finish within this [default 1000]
    loss_command_timeout_ms = 30000   # the loss command must finish within this [default 30000]

The whole loss action (kill grace, remount timeout, command timeout) must end before another
node may take the resource over (diskhb.core.timing, HD-loss): an interval that leaves no room
for it is refused, naming the smallest interval_ms that works.
diskhb.config calls parse_resources(tables, where); errors name the file and key.
"""

from __future__ import annotations

from dataclasses import dataclass

from diskhb.core import timing
from diskhb.mmp import format as mf
from diskhb.mmp.loss import KINDS

RESOURCES_MAX = 256
TIMEOUT_MS_MAX = 3_600_000
_KEYS = {"name", "region", "interval_ms", "on_loss", "loss_command", "mountpoint", "kill_grace_ms",
         "remount_timeout_ms", "loss_command_timeout_ms", "on_pr_luns"}


@dataclass(frozen=True, slots=True)
class ResourceConfig:
    name: str
    region: str | None
    interval_ms: int
    on_loss: tuple[str, ...]
    loss_command: str | None
    mountpoint: str | None
    kill_grace_ms: int
    remount_timeout_ms: int = timing.REMOUNT_TIMEOUT_MS_DEFAULT
    loss_command_timeout_ms: int = timing.LOSS_COMMAND_TIMEOUT_MS_DEFAULT
    on_pr_luns: bool = False  # its storage lies on the [scsi-pr] LUNs: a scsi-pr fence cuts its holder off

    @property
    def loss_budget_ms(self) -> int:
        return timing.loss_budget_ms(self.on_loss, kill_grace_ms=self.kill_grace_ms,
                                     remount_timeout_ms=self.remount_timeout_ms,
                                     command_timeout_ms=self.loss_command_timeout_ms,
                                     mountpoint=self.mountpoint is not None)

    @property
    def timing(self) -> timing.MmpTiming:
        return timing.MmpTiming(self.interval_ms, self.loss_budget_ms)


def parse_resources(tables: list, where) -> list[ResourceConfig]:
    if len(tables) > RESOURCES_MAX:
        raise where.fail("resource", f"{len(tables)} resources configured", f"at most {RESOURCES_MAX}")
    out: list[ResourceConfig] = []
    for i, t in enumerate(tables, 1):
        prefix = f"resource[{i}]."
        if not isinstance(t, dict):
            raise where.fail(f"resource[{i}]", "must be a table")
        where.unknown_keys(t, _KEYS, prefix)
        name = t.get("name")
        if not isinstance(name, str):
            raise where.fail(f"{prefix}name", "missing or not a string", f"add {prefix}name = \"...\"")
        try:
            mf.check_resource_name(name)
        except mf.BlockError as e:
            raise where.fail(f"{prefix}name", str(e)) from None
        region = t.get("region")
        if region is not None and not isinstance(region, str):
            raise where.fail(f"{prefix}region", "must be a string (a disk region's path or name)")
        if region is not None and region.startswith("uuid:"):  # the region's own spelling, canonical
            from diskhb.regions.disk.devices import parse_uuid_spec

            try:
                region = f"uuid:{parse_uuid_spec(region)}"
            except ValueError as e:
                raise where.fail(f"{prefix}region", str(e), "name a [[region]] by its path, uuid:... or name") from None
        interval = t.get("interval_ms", timing.MMP_INTERVAL_MS_DEFAULT)
        if isinstance(interval, bool) or not isinstance(interval, int) or \
                not mf.INTERVAL_MS_MIN <= interval <= mf.INTERVAL_MS_MAX:
            raise where.fail(f"{prefix}interval_ms", f"{interval!r} out of range",
                             f"use {mf.INTERVAL_MS_MIN}..{mf.INTERVAL_MS_MAX}")
        on_loss = t.get("on_loss", ["kill"])
        if isinstance(on_loss, str):
            on_loss = [on_loss]
        if not isinstance(on_loss, list) or not on_loss or any(k not in KINDS for k in on_loss):
            raise where.fail(f"{prefix}on_loss", f"{on_loss!r} is not a list of loss actions",
                             f"use any of {', '.join(KINDS)}")
        cmd = t.get("loss_command")
        if "command" in on_loss and not (isinstance(cmd, str) and cmd.strip()):
            raise where.fail(f"{prefix}loss_command", "missing", "on_loss has 'command': add loss_command = \"...\"")
        mnt = t.get("mountpoint")
        if mnt is not None and not (isinstance(mnt, str) and mnt.startswith("/") and mnt.rstrip("/")):
            raise where.fail(f"{prefix}mountpoint", f"{mnt!r} is not an absolute path other than /",
                             "name the resource's own mount point, e.g. \"/srv/db\"")
        if "remount-ro" in on_loss and not (isinstance(mnt, str) and mnt.startswith("/")):
            raise where.fail(f"{prefix}mountpoint", "missing or not absolute",
                             "on_loss has 'remount-ro': add mountpoint = \"/...\"")
        grace = t.get("kill_grace_ms", max(1, interval // 2))
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= interval:
            raise where.fail(f"{prefix}kill_grace_ms", f"{grace!r} out of range",
                             f"use 0..{interval} (the kill must finish before others may take over)")
        timeouts = {}
        for key, default in (("remount_timeout_ms", timing.REMOUNT_TIMEOUT_MS_DEFAULT),
                             ("loss_command_timeout_ms", timing.LOSS_COMMAND_TIMEOUT_MS_DEFAULT)):
            v = t.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= TIMEOUT_MS_MAX:
                raise where.fail(f"{prefix}{key}", f"{v!r} out of range", f"use 1..{TIMEOUT_MS_MAX}")
            timeouts[key] = v
        on_pr_luns = t.get("on_pr_luns", False)
        if not isinstance(on_pr_luns, bool):
            raise where.fail(f"{prefix}on_pr_luns", f"{on_pr_luns!r} is not true or false")
        rc = ResourceConfig(name, region, interval, tuple(on_loss), cmd, mnt, grace, **timeouts, on_pr_luns=on_pr_luns)
        try:
            timing.check_mmp_timing(interval, rc.loss_budget_ms)
        except timing.TimingError as e:
            raise where.fail(f"{prefix}interval_ms", str(e)) from None
        out.append(rc)
    names = [r.name for r in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise where.fail("resource", f"duplicate resource name(s) {dup}")
    return out
