"""Prometheus counters of the heartbeat links (network datagrams and serial frames alike).

They live in the default registry, like diskhb.metrics. Registration is idempotent: a second
import of this module (another import path, a test reloading it) gets the collectors already
registered instead of a "Duplicated timeseries" error. Labels are bounded: `region` by the
config (<= 32), `reason` by netpath.wire.REASONS.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter


def _counter(name: str, doc: str, labels: list[str]) -> Counter:
    existing = REGISTRY._names_to_collectors.get(name)  # noqa: SLF001 - the only lookup client_python offers
    if existing is not None:
        return existing
    try:
        return Counter(name, doc, labels)
    except ValueError:  # registered by another thread between the lookup and here
        return REGISTRY._names_to_collectors[name]  # noqa: SLF001


PACKETS_REJECTED = _counter("diskhb_net_packets_rejected_total",
                            "Heartbeat packets/frames dropped, by reason (see netpath.wire.REASONS)",
                            ["region", "reason"])
PACKETS_ACCEPTED = _counter("diskhb_net_packets_accepted_total",
                            "Authenticated, fresh heartbeat packets/frames received", ["region"])
PACKETS_SENT = _counter("diskhb_net_packets_sent_total",
                        "Heartbeat packets/frames handed to the kernel (one per destination)", ["region"])
SEND_ERRORS = _counter("diskhb_net_send_errors_total",
                       "Heartbeat sends that failed (one per destination)", ["region"])
LINK_REOPENS = _counter("diskhb_net_link_reopens_total",
                        "Serial devices reopened after they disappeared", ["region"])
