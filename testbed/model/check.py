"""The model's part of validation: `model.arch` builds, and every cut the topology names is in its catalogue.

Loading a topology never imports torch (testbed.config.schema); this step builds the model once and traces it,
a few seconds, and runs before anything starts (`run.py` calls it after loading). Problems are reported
as config problems: the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from testbed.config.errors import ConfigError, Problem
from testbed.config.schema import Topology
from testbed.domain import split_policy
from testbed.model.arch import arch_problem

SHOWN_CUTS = 12  # a long catalogue is cut short in an error, with where to see all of it


def model_catalogue(topo: Topology, file: str) -> Any:
    """The catalogue of the topology's model (testbed.model.cut_catalogue.Catalogue); ConfigError if it cannot be
    built."""
    from testbed.model.split_model import build_backbone  # pulls in torch at import

    m = topo.model
    if problem := arch_problem(m.arch):
        raise ConfigError(file, [Problem("model.arch", problem, m.arch, True)])
    try:
        net = build_backbone(m.weights, m.seed, 1000, m.arch, m.input_size)
    except (TypeError, ValueError, RuntimeError) as e:
        key = "model.weights" if m.weights and not isinstance(e, TypeError) else "model.arch"
        raise ConfigError(file, [Problem(key, f"cannot build the model: {e}", getattr(m, key.split('.')[1]),
                                         True)]) from None
    from testbed.model.cut_catalogue import build_catalogue  # pulls in torch at import

    return build_catalogue(net, m.input_size)


def check_model(topo: Topology, file: str, training: bool = False) -> Any:
    """Build and trace the model, check every named cut (and train.channels for `run.py train`); returns the
    catalogue. Raises ConfigError."""
    cat = model_catalogue(topo, file)
    problems = cut_problems(topo, cat, training)
    if problems:
        raise ConfigError(file, problems)
    return cat


def _allowed(cat: Any, extra: str = "") -> str:
    names = cat.names()
    shown = ", ".join(names[:SHOWN_CUTS])
    more = f" ... ({len(names)} in all: run.py TOPOLOGY --catalogue lists them)" if len(names) > SHOWN_CUTS else ""
    return f"allowed: {extra}{shown}{more}" if names else f"allowed: {extra or 'none'} ({cat.note})"


def _name_problem(key: str, name: str, cat: Any, extra: str = "") -> Problem | None:
    cut = cat.get(name)
    if cut is None:
        return Problem(key, f"not a cut of this model; {_allowed(cat, extra)}", name, True)
    if cut.name != name:
        return Problem(key, f"this cut is named {cut.name} in the catalogue; allowed: {cut.name}", name, True)
    return None


def cut_problems(topo: Topology, cat: Any, training: bool = False) -> list[Problem]:
    """model.split, its butterfly channels, static:<cut> strategies and policy.cuts; train.channels if training."""
    m = topo.model
    if (p := _name_problem("model.split", m.split, cat)) is not None:
        return [p]
    c = cat.get(m.split).channels
    problems = []
    if m.butterfly_channels >= c:
        problems.append(Problem("model.butterfly_channels", f"must be below the {c} channels at split {m.split} "
                                "(the butterfly unit reduces them)", m.butterfly_channels, True))
    problems += [Problem(f"train.channels[{i}]", f"must be below the {c} channels at split {m.split} (the "
                         "butterfly unit reduces them)", n, True) for i, n in enumerate(topo.train.channels)
                 if training and n >= c]
    fixed = "cloud_only, device_only, "
    prefix = split_policy.STATIC_PREFIX
    places = [(f"strategies[{i}]", s[len(prefix):]) for i, s in enumerate(topo.strategies) if s.startswith(prefix)]
    if topo.policy.cuts != "auto":
        places += [(f"policy.cuts[{i}]", cut) for i, cut in enumerate(topo.policy.cuts)]
    for key, cut in places:
        base = cut.removesuffix("+butterfly")
        if base not in ("cloud_only", "device_only") and (p := _name_problem(key, base, cat, fixed)) is not None:
            problems.append(p)
    return problems


def format_catalogue(cat: Any, dtype: str, zstd_level: int) -> str:
    """The table `run.py TOPOLOGY --catalogue` prints: one row per cut, the input first."""
    from testbed.model.split_model import catalogue_rows  # pulls in torch at import

    per_value = {"float32": 4, "float16": 2, "int8": 1}[dtype]
    coded = f"{dtype} bytes" + (f" (+zstd{zstd_level})" if zstd_level else "")
    rows = catalogue_rows(cat)
    width = max(len(r["cut"]) for r in rows) + 2
    lines = [f"cuts found by {'torch.fx tracing' if cat.method == 'fx' else 'top-level children'}"
             + (f": {cat.note}" if cat.note else "") + f"; {len(rows) - 1} cuts, natural bottlenecks marked *",
             f"{'cut':<{width}}{'output shape':<18}{'float32 bytes':>14}{dtype + ' bytes':>14}{'FLOPs before':>14}"
             f"  bottleneck"]
    for r in rows:
        n = r["float32_bytes"] // 4
        lines.append(f"{r['cut']:<{width}}{'x'.join(str(d) for d in r['shape']):<18}{r['float32_bytes']:>14,}"
                     f"{n * per_value:>14,}{r['flops_share']:>14.1%}  {'*' if r['natural_bottleneck'] else ''}")
    if zstd_level:
        lines.append(f"{coded}: before zstd (entropy coding depends on the values; the run measures it)")
    return "\n".join(lines)
