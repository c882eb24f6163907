"""What the node core does with a region's report of our own I/O, for the region tests: each
region gets the OwnIoHealth the core would keep for it, fed from poll(); the rest is returned."""

from __future__ import annotations

import weakref

from diskhb.core.region_health import OwnIoHealth
from diskhb.core.types import IoCompleted, IoSubmitted

_HEALTH: "weakref.WeakKeyDictionary[object, OwnIoHealth]" = weakref.WeakKeyDictionary()


def health(region, io_timeout_ms: int) -> OwnIoHealth:
    """The OwnIoHealth the node core keeps for `region` (made on first use)."""
    if region not in _HEALTH:
        _HEALTH[region] = OwnIoHealth(region.name, io_timeout_ms)
    return _HEALTH[region]


def feed(h: OwnIoHealth, obs: list) -> list:
    """Our own I/O goes into its OwnIoHealth; the rest (samples, DuplicateId...) is returned, in order."""
    rest = []
    for o in obs:
        if isinstance(o, (IoSubmitted, IoCompleted)):
            h.observe(o)
        else:
            rest.append(o)
    return rest
