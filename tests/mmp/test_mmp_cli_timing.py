"""The CLI's refusal of an --interval-ms that leaves no room for the loss action (diskhb.mmp.cli
_timing, timing.check_mmp_timing): the smallest interval its message names must itself work."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from diskhb.errors import OperatorError
from diskhb.mmp.cli import _loss_action, _timing

CTX = SimpleNamespace(res_cfg=None)  # --region/--device: the loss action comes from the options


def loss_for(i: int):
    return _loss_action(CTX, i, None, None)


def test_a_valid_interval_is_taken_and_100_is_refused_for_mmp_run():
    assert _timing(loss_for, 200).interval_ms == 200
    with pytest.raises(OperatorError, match="leaves no room for the loss action"):
        _timing(loss_for, 100)


@pytest.mark.parametrize("interval_ms", [100, 135])
def test_the_interval_the_refusal_names_is_accepted(interval_ms):
    """The default kill grace grows with the interval (interval / 4): the named minimum is the
    smallest interval whose own loss action fits, and one less is refused."""
    with pytest.raises(OperatorError) as e:
        _timing(loss_for, interval_ms)
    named = int(re.search(r"use --interval-ms (\d+) or more", str(e.value)).group(1))
    assert _timing(loss_for, named).interval_ms == named
    with pytest.raises(OperatorError):
        _timing(loss_for, named - 1)
