"""Cross-field checks: what the schema alone cannot see (names that must exist, files that must be readable,
strategies that need each other, faults that must name real targets)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from testbed.base import files
from testbed.config import bounds
from testbed.config.errors import Problem
from testbed.config.schema import BUILTIN_DATASETS, RESNET50_CHANNELS, SPLIT_POINTS, ModelSpec, Topology
from testbed.domain import hardware, split_policy
from testbed.domain.population import AvailabilityError, PopulationCsvError, draws
from throttling.cellreplay import DelayTrace, LightTrace
from throttling.trace import MahimahiTrace, TraceError


def cross_checks(topo: Topology) -> list[Problem]:
    problems = []
    for i, g in enumerate(topo.devices):
        if g.network not in topo.networks:
            problems.append(Problem(f"devices[{i}].network", "unknown network; allowed: "
                                    + ", ".join(sorted(topo.networks)), g.network, True))
        if g.device_class not in topo.device_classes:
            problems.append(Problem(f"devices[{i}].device_class", "unknown device class; allowed: "
                                    + ", ".join(sorted(topo.device_classes)), g.device_class, True))
    if len(set(topo.strategies)) != len(topo.strategies):
        problems.append(Problem("strategies", "each strategy may appear once", topo.strategies, True))
    problems += _policy_problems(topo)
    c = _known_channels(topo.model)
    if c is not None and topo.model.butterfly_channels >= c:
        problems.append(Problem("model.butterfly_channels",
                                f"must be below the {c} channels at split {topo.model.split} "
                                "(the butterfly unit reduces them)", topo.model.butterfly_channels, True))
    for key, value in (("model.weights", topo.model.weights), ("model.image_dir", topo.model.image_dir)):
        if value is not None and (problem := _path_problem(key, value)):
            problems.append(problem)
    problems += _trace_problems(topo)
    problems += _workload_trace_problems(topo)
    problems += _subnet_problems(topo)
    problems += _train_problems(topo)
    problems += _fault_problems(topo)
    problems += _population_problems(topo)
    problems += _hardware_problems(topo)
    if topo.pools.compute == "replay" and topo.throttling.cpu == "cgroup":
        problems.append(Problem("throttling.cpu", "cgroup caps need real device compute; pools.compute is replay",
                                "cgroup", True))
    if topo.throttling.backend == "tc" and topo.ray.address is not None:
        problems.append(Problem("throttling.backend", "tc shapes links in network namespaces on one host; "
                                "on a cluster use userspace or auto", "tc", True))
    if topo.cloud.compute == "real" and topo.cloud.replay_speed != 1.0:
        problems.append(Problem("cloud.replay_speed", "applies to cloud.compute: replay only",
                                topo.cloud.replay_speed, True))
    if topo.cloud.device == "cuda" and topo.cloud.num_gpus <= 0:
        problems.append(Problem("cloud.num_gpus", "must be > 0 when cloud.device is cuda",
                                topo.cloud.num_gpus, True))
    return problems


def _population_problems(topo: Topology) -> list[Problem]:
    """A population CSV is read here, so a bad row stops the run before anything starts."""
    problems = []
    for i, g in enumerate(topo.devices):
        if g.population is None:
            continue
        try:
            draws(g.population, g.count, g.name or f"group{i}", topo.warmup_s + topo.duration_s)
        except PopulationCsvError as e:
            problems.append(Problem(f"devices[{i}].population.csv", str(e)))
        except AvailabilityError as e:
            problems.append(Problem(f"devices[{i}].population.availability", str(e)))
        if g.population.compute_ms is not None and topo.device_classes[g.device_class].hardware is not None:
            problems.append(Problem(f"devices[{i}].population.compute_ms", "the device class has a hardware profile "
                                    f"(device_classes.{g.device_class}.hardware) whose times replace it; give one",
                                    None, True))
        if topo.throttling.cpu != "timescale":
            problems.append(Problem("throttling.cpu", f"devices[{i}] has a population: per-device compute is "
                                    "time-scaled (cgroup caps are per class); use timescale", topo.throttling.cpu,
                                    True))
    return problems


def _hardware_problems(topo: Topology) -> list[Problem]:
    """Hardware profiles that exist, validate, and cover the model, its input size and every cut in use."""
    used = {g.device_class for g in topo.devices}
    places = [(f"device_classes.{n}.hardware", "device", c.hardware) for n, c in topo.device_classes.items()
              if c.hardware is not None and n in used]
    if topo.cloud.hardware is not None:
        places.append(("cloud.hardware", "cloud", topo.cloud.hardware))
    cuts = [c for s in topo.strategies if (c := split_policy.static_cut(s, topo.model.split))]
    if any(s in split_policy.ADAPTIVE for s in topo.strategies):  # auto: every stage may be a candidate
        cuts += list(topo.policy.cuts) if topo.policy.cuts != "auto" else list(SPLIT_POINTS)
    problems = []
    for key, kind, ref in places:
        where = f"{ref}: " if hardware.is_file(ref) else ""
        try:
            prof = hardware.resolve_device(ref) if kind == "device" else hardware.resolve_cloud(ref)
        except hardware.ProfileError as e:
            problems += [Problem(key, f"{where}{k + ': ' if k else ''}{m}", ref, True) for k, m in e.problems]
            continue
        m = topo.model
        if (prof.arch, prof.input_size) != (m.arch, m.input_size):
            problems.append(Problem(key, f"profile {prof.name} covers {prof.arch} at {prof.input_size} px; the model "
                                    f"is {m.arch} at {m.input_size} px (model.arch, model.input_size)", ref, True))
            continue
        if not isinstance(prof, hardware.DeviceHardware) or prof.spread:
            continue  # spread over the cuts by MAC or FLOPs share: every cut of the traced model is covered
        for cut in cuts:  # a profile that lists its cuts' times must list every cut the run names
            try:
                prof.cut_ms(cut)
            except hardware.ProfileError as e:
                problems.append(Problem(key, f"{where}{e}", ref, True))
    return problems


def _known_channels(m: ModelSpec) -> int | None:
    """Channels at model.split where they are known without building the model (ResNet-50's stages); other
    models are checked against their catalogue before the run (testbed.model.check)."""
    return RESNET50_CHANNELS.get(m.split) if m.arch == "resnet50" else None


def _policy_problems(topo: Topology) -> list[Problem]:
    """A butterfly unit exists only at model.split; an energy objective needs every network's radio."""
    problems = []
    prefix = split_policy.STATIC_PREFIX
    places = [(f"strategies[{i}]", s[len(prefix):]) for i, s in enumerate(topo.strategies) if s.startswith(prefix)]
    if topo.policy.cuts != "auto":
        places += [(f"policy.cuts[{i}]", c) for i, c in enumerate(topo.policy.cuts)]
        if len(set(topo.policy.cuts)) != len(topo.policy.cuts):
            problems.append(Problem("policy.cuts", "each cut may appear once", topo.policy.cuts, True))
    for key, cut in places:
        if cut.endswith("+butterfly") and cut != f"{topo.model.split}+butterfly":
            problems.append(Problem(key, f"the butterfly unit sits at model.split ({topo.model.split}); allowed: "
                                    f"{topo.model.split}+butterfly or a cut without it", cut, True))
    adaptive = any(s in split_policy.ADAPTIVE for s in topo.strategies)
    if adaptive and topo.policy.objective != "latency":
        used = sorted({g.network for g in topo.devices if g.network in topo.networks})
        for name in used:
            r = topo.networks[name].radio
            if None in (r.alpha_up_mw_per_mbps, r.alpha_down_mw_per_mbps, r.beta_mw):
                problems.append(Problem("policy.objective", f"objective {topo.policy.objective} needs radio "
                                        f"coefficients; network {name} has none (allowed here: latency)",
                                        topo.policy.objective, True))
    return problems


def _path_problem(key: str, value: str) -> Problem | None:
    """A configured file (weights) or folder (images) that is not there, not that kind of thing, or too large
    (testbed.config.bounds: os.stat only, so a FIFO never blocks). A path the OS refuses outright (a name too long) is
    reported the same way, never raised."""
    folder = key == "model.image_dir"
    problem = files.file_problem(value, files.MAX_WEIGHTS_BYTES, folder=folder)
    if problem is None and folder:
        problem = "; ".join(bounds.image_dir_problems(value)[:3]) or None
    return Problem(key, problem, value, True) if problem else None


def _trace_places(topo: Topology) -> list[tuple[str, str]]:
    places = []
    for name, net in topo.networks.items():
        places += [(f"networks.{name}.{k}", getattr(net, k)) for k in ("uplink_trace", "downlink_trace")]
    for i, g in enumerate(topo.devices):
        places += [(f"devices[{i}].link.{k}", getattr(g.link, k)) for k in ("uplink_trace", "downlink_trace")]
    return [(k, v) for k, v in places if v is not None]


def _trace_problems(topo: Topology) -> list[Problem]:
    problems = []
    for key, path in _trace_places(topo):
        if problem := files.file_problem(path, files.MAX_TRACE_BYTES):
            problems.append(Problem(key, f"not a usable Mahimahi trace: {problem}", path, True))
            continue
        try:
            MahimahiTrace.load(path)
        except (TraceError, ValueError) as e:  # ValueError: a path open() refuses (a NUL byte)
            problems.append(Problem(key, f"not a usable Mahimahi trace: {e}", path, True))
    return problems


def _workload_trace_problems(topo: Topology) -> list[Problem]:
    """Delay and CellReplay traces load and validate; a CellReplay direction has no Mahimahi trace beside it."""

    links: list[tuple[str, Any]] = [(f"networks.{n}", net) for n, net in topo.networks.items()]
    links += [(f"devices[{i}].link", g.link) for i, g in enumerate(topo.devices)]
    problems = []
    for where, link in links:
        for d in ("uplink", "downlink"):
            loads: list[tuple[str, Any, Any, str]] = [
                (f"{d}_delay_trace", getattr(link, f"{d}_delay_trace"), DelayTrace.load, "delay trace")]
            pair = getattr(link, f"{d}_cellreplay")
            if pair is not None:
                loads += [(f"{d}_cellreplay.light", pair.light, LightTrace.load, "CellReplay light trace"),
                          (f"{d}_cellreplay.heavy", pair.heavy, MahimahiTrace.load, "Mahimahi trace")]
                if getattr(link, f"{d}_trace") is not None:
                    problems.append(Problem(f"{where}.{d}_trace", f"{d}_cellreplay replaces it; give one of them",
                                            getattr(link, f"{d}_trace"), True))
                if topo.throttling.backend != "userspace":  # auto may pick tc, whose kernel clocks the bytes
                    problems.append(Problem("throttling.backend", f"{where}.{d}_cellreplay needs the userspace "
                                            "link backend; allowed with it: userspace", topo.throttling.backend,
                                            True))
            for key, path, load, what in loads:
                if path is None:
                    continue
                try:
                    load(path)
                except (TraceError, ValueError) as e:
                    problems.append(Problem(f"{where}.{key}", f"not a usable {what}: {e}", path, True))
    return problems


def _train_problems(topo: Topology) -> list[Problem]:
    t, c = topo.train, _known_channels(topo.model)
    problems = [] if c is None else [
        Problem(f"train.channels[{i}]", f"must be below the {c} channels at split {topo.model.split} "
                "(the butterfly unit reduces them)", n, True) for i, n in enumerate(t.channels) if n >= c]
    for key, values in (("channels", t.channels), ("codecs", t.codecs)):
        if len(set(values)) != len(values):
            problems.append(Problem(f"train.{key}", "each value may appear once", values, True))
    if t.data not in BUILTIN_DATASETS:
        try:
            missing = "" if Path(t.data).is_dir() else "no such folder"
        except (OSError, ValueError) as e:  # a path the OS refuses outright (a name too long)
            missing = f"not a usable path: {getattr(e, 'strerror', None) or e}"
        if missing:
            problems.append(Problem("train.data", f"{missing}; allowed: an ImageFolder folder (one subfolder per "
                                    f"class) or a built-in data set: {', '.join(BUILTIN_DATASETS)}", t.data, True))
    return problems


_FAULT_TARGETS = {"link_outage": ("group", "devices"), "link_degrade": ("group", "devices"),
                  "device_leave": ("group", "devices"), "replica_kill": ("replica",), "pool_kill": ("pool",)}


def _fault_problems(topo: Topology) -> list[Problem]:
    """Targets that exist, the fields each kind needs, and no fields it would ignore."""

    problems = []
    groups = [g.name or f"group{i}" for i, g in enumerate(topo.devices)]
    n_pools = len(topo.pool_slices())
    horizon = topo.warmup_s + topo.duration_s
    names = [f.name or f"{f.kind}@{f.at_s:g}s" for f in topo.faults]
    for i, f in enumerate(topo.faults):
        key = f"faults[{i}]"
        if names.count(names[i]) > 1:
            problems.append(Problem(f"{key}.name", "each fault needs its own name (the default is kind@at_s)",
                                    names[i], True))
        targets = _FAULT_TARGETS[f.kind]
        given = [t for t in ("group", "devices", "replica", "pool") if getattr(f, t) is not None]
        if len([t for t in given if t in targets]) != 1:
            problems.append(Problem(key, f"{f.kind} needs exactly one target; allowed: {' or '.join(targets)}",
                                    {t: getattr(f, t) for t in given}, True))
        for t in given:
            if t not in targets:
                problems.append(Problem(f"{key}.{t}", f"not a target of {f.kind}; allowed: {', '.join(targets)}",
                                        getattr(f, t), True))
        if f.group is not None and f.group not in groups:
            problems.append(Problem(f"{key}.group", "unknown device group; allowed: " + ", ".join(groups),
                                    f.group, True))
        for j, d in enumerate(f.devices or []):
            if d >= topo.device_count:
                problems.append(Problem(f"{key}.devices[{j}]", f"no such device; allowed: 0..{topo.device_count - 1}",
                                        d, True))
        if f.replica is not None and f.replica >= topo.cloud.replicas:
            problems.append(Problem(f"{key}.replica", f"no such replica; allowed: 0..{topo.cloud.replicas - 1}",
                                    f.replica, True))
        if f.pool is not None and f.pool >= n_pools:
            problems.append(Problem(f"{key}.pool", f"no such device pool; allowed: 0..{n_pools - 1}", f.pool, True))
        if f.kind in ("link_outage", "link_degrade", "device_leave") and f.duration_s is None:
            problems.append(Problem(f"{key}.duration_s", f"{f.kind} needs a duration", None, False))
        if f.kind == "pool_kill" and f.duration_s is not None:
            problems.append(Problem(f"{key}.duration_s", "a killed pool stays down for the rest of the phase "
                                    "(it is replaced before the next one); allowed: no duration_s", f.duration_s, True))
        if (f.kind == "link_degrade") != (f.rate_factor is not None):
            problems.append(Problem(f"{key}.rate_factor", "link_degrade needs rate_factor (0 < x < 1); "
                                    "allowed on link_degrade only", f.rate_factor, f.rate_factor is not None))
        if f.at_s >= horizon:
            problems.append(Problem(f"{key}.at_s", f"after the phase ends; allowed: 0 <= at_s < "
                                    f"warmup_s + duration_s = {horizon:g}", f.at_s, True))
        for j, s in enumerate(f.strategies or []):
            if s not in topo.strategies:
                problems.append(Problem(f"{key}.strategies[{j}]", "not a strategy of this topology; allowed: "
                                        + ", ".join(topo.strategies), s, True))
    return problems


def _subnet_problems(topo: Topology) -> list[Problem]:
    try:
        net = ipaddress.ip_network(topo.throttling.subnet)
    except ValueError:
        return [Problem("throttling.subnet", "must be an IPv4 network like 10.77.0.0/16",
                        topo.throttling.subnet, True)]
    if net.version != 4 or not net.is_private:
        return [Problem("throttling.subnet", "must be a private IPv4 network (the run's own namespaces)",
                        topo.throttling.subnet, True)]
    if net.num_addresses < topo.device_count + 3:
        return [Problem("throttling.subnet", f"too small for {topo.device_count} devices "
                        f"(needs {topo.device_count + 3} addresses)", topo.throttling.subnet, True)]
    return []
