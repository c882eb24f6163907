"""diskhb.fencing.pr_key: the reservation key of a node incarnation (K1-K5): layout, never 0,
unique per node id in a cluster, stable for one incarnation, new for the next."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.core.types import NODE_ID_MAX
from diskhb.fencing.pr_key import PrKeyError, cluster_tag, describe, is_incarnation, key_for, node_of, split

GEN = 0x5A5A_1234_89AB_CDEF
generations = st.integers(1, (1 << 63) - 1)  # diskhb.runtime.new_generation: 63 bits, never 0
node_ids = st.integers(1, NODE_ID_MAX)
clusters = st.text(min_size=1, max_size=20)


def test_layout_cluster_node_incarnation():
    k = key_for("lustre1", 2, GEN)
    assert k >> 48 == cluster_tag("lustre1")
    assert (k >> 32) & 0xFFFF == 2
    assert k & 0xFFFFFFFF == 0x89ABCDEF  # the generation's low 32 bits: matchable by eye in status --json
    parts = split(k)
    assert (parts.cluster_tag, parts.node_id, parts.incarnation) == (cluster_tag("lustre1"), 2, 0x89ABCDEF)


def test_golden_values_never_change_silently():
    """A fencer and its victim may run different diskhb versions: the derivation is a wire format."""
    assert cluster_tag("lustre1") == 0x2143
    assert key_for("lustre1", 1, 1) == 0x2143_0001_0000_0001
    assert key_for("c1", NODE_ID_MAX, (1 << 63) - 1) == 0xA36E_1000_FFFF_FFFF


@settings(max_examples=300, deadline=None)
@given(clusters, node_ids, generations)
def test_never_zero_and_stable(cluster, node_id, generation):
    k = key_for(cluster, node_id, generation)
    assert 0 < k < 1 << 64  # K2
    assert k == key_for(cluster, node_id, generation)  # stable for the incarnation
    assert is_incarnation(k, cluster, node_id, generation)


@settings(max_examples=300, deadline=None)
@given(clusters, node_ids, node_ids, generations, generations)
def test_unique_per_node_id_whatever_the_generations(cluster, a, b, ga, gb):
    if a != b:
        assert key_for(cluster, a, ga) != key_for(cluster, b, gb)  # K3


def test_every_node_id_of_a_cluster_has_its_own_key():
    keys = {key_for("c", n, GEN) for n in range(1, NODE_ID_MAX + 1)}
    assert len(keys) == NODE_ID_MAX


def test_a_new_incarnation_is_a_new_key():
    """K4: a late fence of the old incarnation cannot name the new one."""
    old, new = key_for("c", 3, 0x1111_0000_0001), key_for("c", 3, 0x2222_0000_0002)
    assert old != new and old >> 32 == new >> 32
    assert not is_incarnation(old, "c", 3, 0x2222_0000_0002)


def test_attribution_and_foreign_keys():
    ids = {1, 2, 3}
    assert node_of(key_for("c", 2, GEN), "c", ids) == 2
    assert node_of(key_for("c", 9, GEN), "c", ids) is None  # not configured
    assert node_of(key_for("other", 2, GEN), "c", ids) is None  # another cluster (K5)
    assert node_of(0x1111, "c", ids) is None  # a tool's or a person's key
    assert describe(key_for("c", 2, GEN), "c") == f"0x{key_for('c', 2, GEN):016x} (node 2, incarnation 89abcdef)"
    assert describe(0x1111, "c") == "0x0000000000001111 (foreign)"


@pytest.mark.parametrize("args,match", [
    (("", 1, GEN), "non-empty cluster name"),
    (("x" * 65, 1, GEN), "more than 64"),
    ((None, 1, GEN), "non-empty cluster name"),
    (("c", 0, GEN), "node id"),
    (("c", NODE_ID_MAX + 1, GEN), "node id"),
    (("c", True, GEN), "node id"),
    (("c", 1, 0), "generation"),
    (("c", 1, 1 << 64), "generation"),
    (("c", 1, -5), "generation"),
])
def test_bad_input_is_one_line(args, match):
    with pytest.raises(PrKeyError, match=match):
        key_for(*args)


def test_split_refuses_non_keys():
    with pytest.raises(PrKeyError):
        split(-1)
    with pytest.raises(PrKeyError):
        split(1 << 64)
