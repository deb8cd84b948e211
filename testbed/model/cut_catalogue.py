"""Every valid single-tensor cut of a network, found from its traced graph.

The network is traced with torch.fx through torchvision's `NodePathTracer`, so every node carries the
module path torchvision's feature extraction gives it (`layer1.0.relu_2`). A node is a valid cut when,
with the graph's nodes in order, it is the only value computed up to it that anything after it reads
(parameters excepted: the tail holds them too): no skip connection crosses it, and the one tensor it
outputs carries everything the rest of the network needs. A cut is named by the shortest module path
whose last node it is (`layer1` for `layer1.2.relu_2`), as `create_feature_extractor` reads a truncated
name; its full node name is accepted too.

Head and tail at a cut are GraphModules built from the same graph over the same submodules, so they
are views into the one network: head then tail computes exactly what the network computes. Where
tracing fails (data-dependent control flow), the top-level children are taken as a chain, as sc2bench
splits models, and kept only where running them in order reproduces the network's output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import torch
from torch import fx, nn

INPUT = "input"


@dataclass(frozen=True)
class Cut:
    """One cut: what the device sends there, and how much of the network runs before it."""

    name: str
    node: str  # the full node name (module path and call suffix); an accepted alias
    shape: tuple[int, ...]  # one item's output, without the batch dimension
    flops_before: int  # multiply-adds x 2 of conv/matmul ops up to and including the cut (torch's flop counter)
    nonnegative: bool  # the sample output had no negative value (a ReLU output): a butterfly may end in ReLU
    aliases: tuple[str, ...] = ()
    graph_node: str = ""  # the node's name in the traced graph (where head and tail are cut)

    @property
    def float32_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * 4

    @property
    def channels(self) -> int:
        """Channels of a feature map (dim 1 of NCHW), else the last dimension (tokens, vectors)."""
        return self.shape[0] if len(self.shape) == 3 else self.shape[-1]


@dataclass
class Catalogue:
    """A network's cuts in graph order, the input they are measured against, and how they were found."""

    input_shape: tuple[int, ...]
    total_flops: int
    cuts: list[Cut]
    method: str  # "fx" or "children"
    note: str = ""  # why the fallback was taken
    gm: fx.GraphModule | None = None
    children: list[tuple[str, nn.Module]] = field(default_factory=list)

    @property
    def input_bytes(self) -> int:
        return Cut(INPUT, INPUT, self.input_shape, 0, False).float32_bytes

    def names(self) -> list[str]:
        return [c.name for c in self.cuts]

    def get(self, name: str) -> Cut | None:
        return next((c for c in self.cuts if name == c.name or name in c.aliases), None)

    def natural_bottlenecks(self) -> list[str]:
        """Cuts smaller than the input (float32). Of a run of cuts that send the same bytes with no conv or
        matmul between them (an add then its ReLU, a pool then flatten), only the last: the module's output."""
        out = []
        for c, nxt in zip(self.cuts, [*self.cuts[1:], None], strict=True):
            same = nxt is not None and (nxt.float32_bytes, nxt.flops_before) == (c.float32_bytes, c.flops_before)
            if c.float32_bytes < self.input_bytes and not same:
                out.append(c.name)
        return out


# ---------------------------------------------------------------- tracing
def trace(net: nn.Module) -> tuple[fx.GraphModule, dict[fx.Node, str]]:
    from torchvision.models.feature_extraction import NodePathTracer  # torchvision: pulls in torch

    tracer = NodePathTracer()
    graph = tracer.trace(net)
    return fx.GraphModule(tracer.root, graph, net.__class__.__name__), dict(tracer.node_to_qualname)


def _valid_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """Nodes that alone carry every value the rest of the graph reads (the output's producer excluded)."""
    nodes = list(gm.graph.nodes)
    last_use = {n: max((nodes.index(u) for u in n.users), default=-1) for n in nodes}
    out, live = [], set()
    for i, n in enumerate(nodes):
        if n.op == "output":
            break
        if n.op != "get_attr":
            live.add(n)
        live = {m for m in live if last_use[m] > i}
        if n.op != "placeholder" and live == {n} and not any(u.op == "output" for u in n.users):
            out.append(n)
    return out


def _names(nodes: list[fx.Node], all_nodes: list[fx.Node], qualname: dict[fx.Node, str]) -> dict[fx.Node, list[str]]:
    """Each cut's names: every module path whose last node it is (shortest first), then its node name."""
    last: dict[str, fx.Node] = {}
    for n in all_nodes:
        q = qualname.get(n)
        if q is None:
            continue
        parts = q.split(".")
        for k in range(1, len(parts) + 1):
            last[".".join(parts[:k])] = n
    out: dict[fx.Node, list[str]] = {}
    for n in nodes:
        q = qualname.get(n, n.name)
        names = [p for p in (".".join(q.split(".")[:k]) for k in range(1, q.count(".") + 2)) if last.get(p) is n]
        out[n] = names + ([q] if q not in names else [])
    return out


class _Recorder(fx.Interpreter):
    """Runs the graph once, keeping each cut node's output and the conv/matmul FLOPs up to each node."""

    def __init__(self, gm: fx.GraphModule, keep: set[fx.Node]):
        super().__init__(gm)
        self.keep = keep
        self.outputs: dict[fx.Node, Any] = {}
        self.flops_to: dict[fx.Node, int] = {}
        self.total_flops = 0

    def run_node(self, n: fx.Node) -> Any:
        from torch.utils.flop_counter import FlopCounterMode  # torch: seconds to import, only where a model runs

        with FlopCounterMode(display=False) as counter:
            value = super().run_node(n)
        self.total_flops += counter.get_total_flops()
        self.flops_to[n] = self.total_flops
        if n in self.keep:
            self.outputs[n] = value
        return value


@torch.no_grad()
def build_catalogue(net: nn.Module, input_size: int) -> Catalogue:
    """The catalogue of `net` (in eval mode) for square RGB inputs of `input_size` pixels."""
    net.eval()
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    try:
        gm, qualname = trace(net)
    except Exception as e:  # noqa: BLE001 - any tracing failure means the same fallback
        return _children_catalogue(net, x, f"torch.fx could not trace {type(net).__name__} "
                                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                           "cuts are its top-level children")
    nodes = list(gm.graph.nodes)
    valid = _valid_nodes(gm)
    rec = _Recorder(gm, set(valid))
    rec.run(x)
    names = _names(valid, nodes, qualname)
    cuts = [Cut(names[n][0], qualname.get(n, n.name), tuple(v.shape[1:]), rec.flops_to[n], bool((v >= 0).all()),
                tuple(names[n][1:]), n.name) for n in valid if isinstance(v := rec.outputs[n], torch.Tensor)
            and v.dim() >= 2 and v.shape[0] == 1]
    return Catalogue(tuple(x.shape[1:]), rec.total_flops, cuts, "fx", gm=gm)


def _children_catalogue(net: nn.Module, x: torch.Tensor, note: str) -> Catalogue:
    from torch.utils.flop_counter import FlopCounterMode  # torch: seconds to import, only where a model runs

    children = list(net.named_children())
    cuts, flops, y = [], 0, x
    for name, child in children[:-1]:
        with FlopCounterMode(display=False) as counter:
            y = child(y)
        flops += counter.get_total_flops()
        cuts.append(Cut(name, name, tuple(y.shape[1:]), flops, bool((y >= 0).all())))
    chained = bool(children) and torch.equal(children[-1][1](y), net(x))
    with FlopCounterMode(display=False) as counter:
        net(x)
    if not chained:
        note += "; running them in order does not give the network's output, so no cut is offered"
        cuts = []
    return Catalogue(tuple(x.shape[1:]), counter.get_total_flops(), cuts, "children", note, children=children)


# ---------------------------------------------------------------- head and tail
def split_at(cat: Catalogue, name: str) -> tuple[nn.Module, nn.Module]:
    """(head, tail) at the cut `name`: modules that share the network's parameters."""
    cut = cat.get(name)
    if cut is None:
        raise ValueError(f"unknown cut {name!r}; allowed: {', '.join(cat.names())}")
    if cat.gm is None:
        k = [c.name for c in cat.cuts].index(cut.name) + 1
        return nn.Sequential(*[m for _, m in cat.children[:k]]), nn.Sequential(*[m for _, m in cat.children[k:]])
    gm = cat.gm
    node = next(n for n in gm.graph.nodes if n.name == cut.graph_node)
    return _head(gm, node), _tail(gm, node)


def _head(gm: fx.GraphModule, cut: fx.Node) -> fx.GraphModule:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
        if n is cut:
            break
    g.output(env[cut])
    return fx.GraphModule(gm, g, "Head")


def _tail(gm: fx.GraphModule, cut: fx.Node) -> fx.GraphModule:
    g = fx.Graph()
    env = {cut: g.placeholder("features")}
    nodes = list(gm.graph.nodes)
    attrs = {n for n in nodes[:nodes.index(cut)] if n.op == "get_attr"}

    def arg(a: fx.Node) -> fx.Node:
        if a not in env and a in attrs:  # parameters read after the cut: the tail fetches them itself
            env[a] = g.node_copy(a, lambda b: env[b])
        return env[a]

    for n in nodes[nodes.index(cut) + 1:]:
        env[n] = g.node_copy(n, arg)
    return fx.GraphModule(gm, g, "Tail")


# ---------------------------------------------------------------- one-pass timing
class _Timer(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, clock: Callable[[], float]):
        super().__init__(gm)
        self.clock = clock
        self.spent_s: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        t0 = self.clock()
        value = super().run_node(n)
        self.spent_s[n.name] = self.clock() - t0
        return value


@torch.inference_mode()
def cumulative_ms(cat: Catalogue, x: torch.Tensor, runs: int = 5) -> tuple[dict[str, float], float]:
    """({cut: ms of the network up to it}, ms of the whole network) from `runs` timed forward passes
    (after one warm-up): each node timed as the graph runs, the median per node, summed along the graph.
    Every cut is timed by the same few passes, however many cuts there are."""
    passes: list[dict[str, float]] = []
    if cat.gm is None:
        return _children_ms(cat, x, runs)
    for i in range(runs + 1):
        timer = _Timer(cat.gm, time.perf_counter)
        timer.run(x)
        if i:
            passes.append(timer.spent_s)
    per_node = {k: median(p[k] for p in passes) * 1000 for k in passes[0]}
    node_of = {c.name: c.graph_node for c in cat.cuts}
    acc, upto = 0.0, {}
    for k, ms in per_node.items():
        acc += ms
        upto[k] = acc
    return {name: upto[node] for name, node in node_of.items()}, acc


def _children_ms(cat: Catalogue, x: torch.Tensor, runs: int) -> tuple[dict[str, float], float]:
    times: list[list[float]] = []
    for i in range(runs + 1):
        y, row = x, []
        for _, child in cat.children:
            t0 = time.perf_counter()
            y = child(y)
            row.append((time.perf_counter() - t0) * 1000)
        if i:
            times.append(row)
    per = [median(r[j] for r in times) for j in range(len(cat.children))]
    return {c.name: sum(per[:j + 1]) for j, c in enumerate(cat.cuts)}, sum(per)
