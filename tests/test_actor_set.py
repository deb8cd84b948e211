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


class _Logged:
    """An actor handle or class whose calls are appended to a shared log; `x.method.remote()` answers {}."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def options(self, **_):
        return self

    def remote(self, i, *_):  # creating pool i
        self.log.append(f"create pool{i}")
        return _Logged(f"pool{i}", self.log)

    def __getattr__(self, method: str):
        return SimpleNamespace(remote=lambda *a: self.log.append(f"{self.name}.{method}") or {})


def test_replaying_pools_are_created_only_once_their_heads_are_prepared():
    """The prepare task asks for a pool's CPUs and each pool holds its own for life: pools created before it
    ran could take every slot it fits in and wait for its frames for ever (the actors never started)."""
    log: list[str] = []
    a = _actors()
    a.ray.wait = lambda refs, num_returns, fetch_local: log.append(f"wait {len(refs)} of {num_returns}")
    a.ray.get = lambda refs: list(refs) if isinstance(refs, list) else refs
    a.clouds, a.pools, a._replayed = [_Logged("replica0", log)], [], ["heads0", "heads1"]
    a._pool_cls, a._args = _Logged("Pool", log), ("{}", None, {})
    a.topo = SimpleNamespace(pools=SimpleNamespace(num_cpus=1, resources={}))
    a.start()
    assert log == ["replica0.start", "wait 2 of 2", "create pool0", "create pool1", "pool0.prepare",
                   "pool1.prepare", "pool0.connect", "pool1.connect"]
