"""Replica choice per policy, with hand-made loads."""

from __future__ import annotations

from collections import Counter

import pytest

from testbed.domain.balancing import ReplicaChooser


def test_static_uses_one_replica_by_device_id():
    c = ReplicaChooser("static", 3, device_id=7)
    assert c.connects_to() == [1]
    assert {c.pick([0], [0]) for _ in range(5)} == {0}


def test_round_robin_cycles_from_a_per_device_start():
    c = ReplicaChooser("round_robin", 3, device_id=4)
    assert c.connects_to() == [0, 1, 2]
    assert [c.pick([0] * 3, [0] * 3) for _ in range(6)] == [1, 2, 0, 1, 2, 0]


def test_least_outstanding_counts_own_in_flight_and_reported_queues():
    c = ReplicaChooser("least_outstanding", 3, device_id=0)
    assert c.pick([2, 0, 1], [0, 5, 0]) == 2  # loads 2, 5, 1
    assert c.pick([0, 0, 0], [3, 3, 0]) == 2


def test_least_outstanding_breaks_ties_at_random():
    c = ReplicaChooser("least_outstanding", 2, device_id=0, seed=1)
    assert set(Counter(c.pick([0, 0], [0, 0]) for _ in range(200))) == {0, 1}


def test_power_of_two_never_picks_the_most_loaded_of_three():
    c = ReplicaChooser("power_of_two", 3, device_id=5, seed=2)
    picks = Counter(c.pick([0, 0, 0], [1, 9, 1]) for _ in range(300))
    assert picks[1] == 0 and picks[0] > 50 and picks[2] > 50


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="allowed: static, round_robin, least_outstanding, power_of_two"):
        ReplicaChooser("random", 2, 0)
