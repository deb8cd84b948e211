"""The per-cut heads a pool's devices run: one record per cut, built and calibrated once per pool.

A head is the network part a device runs before a cut (none for cloud_only), what it costs on this host
(calibrated at start), what encoding its output costs and how many bytes go up, and, where the pool
replays compute, every frame's result computed once at start. Devices share the heads and read them only.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np

from testbed.base import codec
from testbed.base.clock import now
from testbed.config.schema import Topology
from testbed.domain import hardware, split_policy
from testbed.domain.frames import make_frames
from testbed.domain.split_policy import CutProfile

CALIBRATION_RUNS = 5
FRAMES_PER_POOL = 32

# one frame's device work: (started at, head s, encode s, payload, header fields for the request)
Work = tuple[float, float, float, bytes, dict[str, Any]]


def times_full_model(specs: list[Any]) -> bool:
    """Whether a pool with these devices (DeviceSpec) times the full model too: an absolute device profile
    (full_model_ms) is set against it."""
    return any(s.full_model_ms is not None for s in specs)


@dataclass
class Head:
    cut: str
    model: Any  # the network part the device runs (None: cloud_only)
    encode_ms: float  # host ms of encoding what goes up
    bytes_up: int  # median bytes of what goes up
    host_ms: float = 0.0  # host ms of the network part (0 without one)
    replayed: list[Work] = field(default_factory=list)  # pools.compute replay: each frame's work, by index

    @property
    def on_device(self) -> bool:
        """The device runs a network part before this cut (every cut but cloud_only)."""
        return self.cut != "cloud_only"


class Heads:
    """Every cut this run's policies may use, with the frames the pool's devices send."""

    def __init__(self, topo: Topology, pool_id: int):
        self.topo = topo
        self.pool_id = pool_id
        self.by_cut: dict[str, Head] = {}
        self.frames: list[np.ndarray] = []
        self.cuts: list[str] = []  # every cut this run's policies may use
        self.candidates: list[str] = []  # the cuts best_static and dynamic choose among
        self.flops_share: dict[str, float] = {}  # cut -> share of the model's FLOPs before it (the catalogue)
        self.calibration_s = 0.0  # what calibrating every cut cost at start

    @property
    def calibration(self) -> dict[str, float]:
        """cut -> host ms of the device's network part, for the cuts that have one (in calibration order)."""
        return {c: h.host_ms for c, h in self.by_cut.items() if h.on_device}

    def build(self, with_full_model: bool) -> None:
        """Build the model and time each cut's head on this host (`with_full_model`: device_only too)."""
        import torch  # start-up cost: only in the process that computes

        from testbed.model.cut_catalogue import cumulative_ms  # pulls in torch at import
        from testbed.model.split_model import (  # pulls in torch at import
            build_split_model,
            catalogue_rows,
            cut_parts,
            preprocess,
        )

        torch.set_num_threads(self.topo.pools.torch_threads)
        m, policy = self.topo.model, self.topo.policy
        sm = build_split_model(m.weights, m.seed, m.split, m.butterfly_channels, m.input_size, arch=m.arch)
        catalogue = catalogue_rows(sm.catalogue)
        self.flops_share = {r["cut"]: r["flops_share"] for r in catalogue}  # a hardware profile's rule for any cut
        self.frames = make_frames(m.image_dir, m.input_size, FRAMES_PER_POOL, seed=m.seed + self.pool_id)
        self.cuts = split_policy.cuts_for_run(self.topo.strategies, policy.cuts, m.split, catalogue)
        if any(s in split_policy.ADAPTIVE for s in self.topo.strategies):
            self.candidates = split_policy.candidate_cuts(policy.cuts, m.split, catalogue)
        profiled = self.cuts + (["device_only"] if with_full_model and "device_only" not in self.cuts else [])
        t_cal = now()
        # every raw cut's head time from one set of timed passes along the graph, not one head per cut
        with torch.inference_mode():
            upto_ms, full_ms = cumulative_ms(sm.catalogue, preprocess([self.frames[0]]), CALIBRATION_RUNS)
        upto_ms["device_only"] = full_ms
        for cut in profiled:
            self.by_cut[cut] = self._calibrated(cut, cut_parts(sm, cut)[0], upto_ms.get(cut))
        self.calibration_s = now() - t_cal

    def _calibrated(self, cut: str, model: Any, one_pass_ms: float | None) -> Head:
        """A cut's head with its times: the graph pass's time where it has one, else timed runs of it."""
        head = Head(cut, model, 0.0, 0)
        self.by_cut[cut] = head  # work() reads the model from here
        n_runs = 1 if one_pass_ms is not None else 2 + CALIBRATION_RUNS  # one run: warm-up, bytes and encode
        runs = [self.work(cut, self.frames[i % len(self.frames)]) for i in range(n_runs)]
        runs = runs if one_pass_ms is not None else runs[2:]
        if model is not None:
            head.host_ms = one_pass_ms if one_pass_ms is not None else median(r[1] for r in runs) * 1000
        head.encode_ms = median(r[2] for r in runs) * 1000
        head.bytes_up = int(median(len(r[3]) for r in runs))
        return head

    def record_replays(self) -> None:
        """Every frame's work at every cut, computed now, so devices replay it without computing."""
        for cut in self.cuts:
            self.by_cut[cut].replayed = [self.work(cut, f) for f in self.frames]

    def for_pool(self, pool_id: int, with_full_model: bool) -> Heads:
        """The same model and calibration with `pool_id`'s own frames (replays not yet recorded): another pool's
        heads without building or timing the model again."""
        other = Heads(self.topo, pool_id)
        other.cuts, other.candidates, other.flops_share = self.cuts, self.candidates, self.flops_share
        other.calibration_s = self.calibration_s
        m = self.topo.model
        other.frames = make_frames(m.image_dir, m.input_size, FRAMES_PER_POOL, seed=m.seed + pool_id)
        other.by_cut = {c: dataclasses.replace(h, replayed=[]) for c, h in self.by_cut.items()
                        if with_full_model or c != "device_only" or c in self.cuts}
        return other

    def without_models(self) -> Heads:
        """These heads for a pool that only replays: every time, byte and replayed frame, no network part (so
        the pool that receives them never loads torch)."""
        other = copy.copy(self)
        other.by_cut = {c: dataclasses.replace(h, model=None) for c, h in self.by_cut.items()}
        return other

    def work(self, cut: str, frame: np.ndarray) -> Work:
        """What a device does for real with `frame` at `cut`: its head, then the encoding of what goes up."""
        t_exec = now()
        m = self.topo.model
        if cut == "cloud_only":
            data = codec.encode_image(frame, m.cloud_only_upload, m.jpeg_quality)
            return t_exec, 0.0, now() - t_exec, data, {}
        out = self.infer(self.by_cut[cut].model, frame)
        t_head = now()
        if cut == "device_only":
            return t_exec, t_head - t_exec, 0.0, b"", {"top1": int(out.argmax(dim=1)[0])}
        meta, payload = codec.encode_tensor(out[0].numpy(), m.codec.dtype, m.codec.zstd_level)
        return t_exec, t_head - t_exec, now() - t_head, payload, {"codec": meta}

    @staticmethod
    def infer(model: Any, frame: np.ndarray) -> Any:
        import torch  # start-up cost: only in the process that computes

        from testbed.model.split_model import preprocess  # pulls in torch at import

        with torch.inference_mode():
            return model(preprocess([frame]))

    def hw_ms(self, hw: hardware.DeviceHardware, cut: str) -> float:
        """A hardware profile's time for `cut` (a cut it does not list: by the catalogue's FLOPs share)."""
        return hw.cut_ms(cut, self.flops_share.get(cut.partition("+")[0]))

    def profile(self, cut: str, speed: float, cloud_ms: dict[str, float],
                hw: hardware.DeviceHardware | None = None) -> CutProfile:
        """What a cut costs a device (calibrated host times at its speed, or its hardware profile's) for the
        split predictions."""
        head = self.by_cut[cut]
        device_ms = (head.host_ms + head.encode_ms) / speed if hw is None else self.hw_ms(hw, cut) + head.encode_ms
        return CutProfile(cut, device_ms, head.bytes_up, cloud_ms.get(cut, 0.0))
