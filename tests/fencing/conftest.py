"""Fixtures for the SCSI-PR tests: one private tgtd per test session (tools.tgt), a fresh target and
LUN per test, and iSCSI sessions (one initiator name per node) that are always closed.

Skips, with the reason, when tgt or libiscsi is missing or we are not root (`make test` installs
the Debian packages as root)."""

from __future__ import annotations

import itertools

import pytest

from tools import tgt as tgt_harness

IQN_BASE = "iqn.2024-01.org.diskhb.test"
_serial = itertools.count(1)


def node_name(n: int | str) -> str:
    return f"{IQN_BASE}:node{n}"


@pytest.fixture(scope="session")
def tgtd():
    why = tgt_harness.pr_missing()
    if why:
        pytest.skip(why)
    with tgt_harness.Tgt() as t:
        yield t


class Lun:
    """One test's target: its URL and a factory of sessions, node(1) -> an IscsiTransport as node 1."""

    def __init__(self, tgtd, iqn: str, url: str):
        self.tgtd, self.iqn, self.url = tgtd, iqn, url
        self.sessions: list = []

    @staticmethod
    def initiator(n: int | str) -> str:
        return node_name(n)

    def node(self, n: int | str, url: str | None = None):
        from diskhb.fencing.scsi.iscsi import IscsiTransport
        s = IscsiTransport(url or self.url, node_name(n))
        self.sessions.append(s)
        return s

    def close(self) -> None:
        for s in self.sessions:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass


def _fresh_lun(tgtd):
    iqn = f"{IQN_BASE}:lun{next(_serial)}"
    lu = Lun(tgtd, iqn, tgtd.add_target(iqn, size_bytes=4 << 20))
    try:
        yield lu
    finally:
        lu.close()
        tgtd.remove_target(iqn)


@pytest.fixture
def lun(tgtd):
    yield from _fresh_lun(tgtd)


@pytest.fixture
def lun2(tgtd):
    """A second target of the same tgtd, for the multi-LUN tests (its own LU and PR state)."""
    yield from _fresh_lun(tgtd)
