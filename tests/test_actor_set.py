"""The actors' owner without a cluster: it alone knows who is down, marks actors found dead, and kills once."""

from __future__ import annotations

from types import SimpleNamespace

from testbed.run.actor_set import Actors


class ActorDied(Exception):
    pass


class FakeRay:
    """ray.get / ray.kill over plain values: a ref is the value, or ActorDied to raise."""

    exceptions = SimpleNamespace(RayActorError=ActorDied)

    def __init__(self) -> None:
        self.killed: list[str] = []

    def get(self, ref):
        if ref is ActorDied:
            raise ActorDied()
        return ref

    def kill(self, actor, no_restart: bool) -> None:
        assert no_restart
        self.killed.append(actor)


def _actors() -> Actors:
    a = Actors.__new__(Actors)  # the owner's state, without starting Ray actors
    a.ray, a.slices = FakeRay(), [(0, 1, 2), (3, 4)]
    a.pools, a.clouds = ["pool0", "pool1"], ["replica0", "replica1"]
    a._down, a._starting, a._deaths = {"pools": set(), "clouds": set()}, {}, []
    return a


def test_a_kill_marks_the_actor_down_once_and_its_devices_gone():
    a = _actors()
    assert a.kill("pools", 1) and not a.kill("pools", 1)
    assert a.ray.killed == ["pool1"] and a.down("pools") == [1] and a.down_devices() == {3, 4}
    assert a.live("pools") == ["pool0"] and a.is_live("clouds", 1) and a.take_deaths() == []


def test_an_actor_found_dead_is_marked_down_and_reported_once_in_order():
    a = _actors()
    answers = {"replica0": ActorDied, "replica1": "ok"}
    assert a.gather("clouds", lambda c: answers[c]) == ["ok"]
    answers["replica1"] = ActorDied
    assert a.gather("clouds", lambda c: answers[c]) == []  # replica0 is no longer asked
    assert a.take_deaths() == [("clouds", 0), ("clouds", 1)] and a.take_deaths() == []
    assert a.down("clouds") == [0, 1] and not a.kill("clouds", 0)
