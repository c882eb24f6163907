"""`record` is dataclass(frozen=True, slots=True) with a cheaper __init__: nothing else may differ."""

import dataclasses
import pickle

import pytest

from diskhb.core.record import record
from diskhb.core.types import IoCompleted


@record
class R:
    region: str
    at_ms: int
    error: str | None = None
    tag: int | None = 7


@dataclasses.dataclass(frozen=True, slots=True)
class D:
    region: str
    at_ms: int
    error: str | None = None
    tag: int | None = 7


def test_fields_defaults_keywords_and_positions_as_a_dataclass():
    for args, kw in [(("disk", 5), {}), (("disk", 5, "EIO"), {}), (("disk",), {"at_ms": 5, "tag": None}),
                     ((), {"region": "net", "at_ms": 1, "error": "x", "tag": 2})]:
        r, d = R(*args, **kw), D(*args, **kw)
        assert dataclasses.astuple(r) == dataclasses.astuple(d)
        assert repr(r) == repr(d).replace("D(", "R(")


def test_bad_calls_fail_like_a_dataclass():
    for args, kw in [((), {}), (("disk",), {}), (("disk", 5), {"nope": 1}), (("disk", 5, None, 1, 2), {}),
                     (("disk", 5), {"region": "x"})]:
        with pytest.raises(TypeError):
            R(*args, **kw)
        with pytest.raises(TypeError):
            D(*args, **kw)


def test_frozen_slotted_hashable_comparable_picklable():
    r = R("disk", 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.at_ms = 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.region
    with pytest.raises((AttributeError, TypeError)):
        r.other = 1  # slots: no __dict__
    assert not hasattr(r, "__dict__")
    assert r == R("disk", 5) and r != R("disk", 6) and hash(r) == hash(R("disk", 5))
    assert pickle.loads(pickle.dumps(r)) == r
    assert dataclasses.replace(r, at_ms=9) == R("disk", 9)
    assert dataclasses.is_dataclass(r) and R.__init__.__qualname__ == "R.__init__"


def test_the_core_records_are_records():
    c = IoCompleted("disk", "read", 5, True, submitted_ms=3)
    assert (c.region, c.kind, c.at_ms, c.ok, c.error, c.tag, c.submitted_ms) == ("disk", "read", 5, True, None, None, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.ok = False


def test_refuses_what_its_init_would_drop():
    with pytest.raises(TypeError, match="plain fields"):
        @record
        class F:
            x: list = dataclasses.field(default_factory=list)
    with pytest.raises(TypeError, match="plain fields"):
        @record
        class P:
            x: int

            def __post_init__(self):
                pass
