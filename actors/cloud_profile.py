"""`cloud.hardware`: a replica whose batches answer after a hardware profile's latency(batch), not this host's.

Everything but the accelerator's time stays real: TCP ingress, the payload's decode, the dynamic batcher and
its queue, the shaped downlink, and the answers (top-1 of the real model on the real bytes). A profile faster
than this host is emulated by computing the answers ahead: the pools send a fixed, seeded set of frames through
deterministic device parts, so at start the replica builds the same payloads and computes each one's answer for
real; every batch then decodes its payloads for real, looks the answers up and holds the executor (as the
accelerator would be held) until the profile's time for its size has passed. A payload it did not foresee is
computed on arrival (counted as `computed_on_arrival`) and remembered.
A batch whose real work took longer than the profile's time is an overrun: it answers late, is counted, and
the run warns that this part of the result is the host's, not the profile's.

At start the replica also times the real tail on its own device for batches of 1 and max_batch_size and
records the measured curve beside the profile's with their ratio (on a GPU: the profile against the real card).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from actors.cloud_server import CloudServer, Job, Outcome, decode_items
from actors.heads import FRAMES_PER_POOL
from testbed.base import codec
from testbed.base.clock import now
from testbed.domain import hardware
from testbed.domain.frames import make_frames

SPIN_S = 0.001  # the last stretch of a hold is yielded, not slept
MEMO_LIMIT = 8192  # distinct payloads remembered per replica (each answer is one int)
PRECOMPUTE_BATCH = 8


def _key(kind: str, payload: bytes) -> bytes:
    return hashlib.blake2b(kind.encode() + payload, digest_size=16).digest()


class ProfileCloudServer(CloudServer):
    """CloudServer whose batch time is the profile's latency(batch); answers real, memoised per payload."""

    def _build(self) -> dict[str, Any]:
        assert self.topo.cloud.hardware is not None
        self.hw = hardware.resolve_cloud(self.topo.cloud.hardware)
        self._memo: dict[bytes, int] = {}
        self.overruns = 0
        self.misses = 0  # payloads not precomputed, answered by computing them on arrival
        self.precomputed = 0
        self.max_overrun_ms = 0.0
        info = super()._build()
        self._precompute()
        measured = self.measure_curves()
        curves = {cut: {str(n): {"measured_ms": round(ms, 3), "profile_ms": round(self._tail_ms(cut, n), 3),
                                 "measured_over_profile": round(ms / self._tail_ms(cut, n), 3)}
                        for n, ms in m.items()} for cut, m in measured.items()}
        label = f"PROFILE {self.hw.name} (batch times from the profile; decoding, batching and answers real)"
        return {**info, "device_name": f"{info['device_name']}, {label}", "compute": "profile",
                "hardware": {"profile": self.hw.name, "source": self.hw.source, "power_w": self.hw.power_w,
                             "latency_by_batch": curves}}

    def _precompute(self) -> None:
        """The answers to every payload the pools will send, computed for real now (the pools' frames and device
        parts are deterministic); a payload that still differs is computed when it arrives, as an overrun."""

        m, topo = self.topo.model, self.topo
        for pool_id in range(len(topo.pool_slices())):
            frames = make_frames(m.image_dir, m.input_size, FRAMES_PER_POOL, seed=m.seed + pool_id)
            for cut in self._parts:
                jobs = [self._device_job(cut, f) for f in frames]
                for i in range(0, len(jobs), PRECOMPUTE_BATCH):
                    batch = jobs[i:i + PRECOMPUTE_BATCH]
                    keys = [_key(cut, j.payload) for j in batch]  # before decoding releases the payloads
                    for k, c in zip(keys, self._top1(cut, self._inputs(cut, batch)), strict=True):
                        self._memo[k] = c
        self.precomputed = len(self._memo)

    def _device_job(self, cut: str, frame: Any) -> Job:
        """What a device sends for `frame` at `cut` (actors.heads.Heads.work, on this replica)."""
        import torch  # torch: seconds to import, only where a model runs

        from testbed.model.split_model import preprocess  # pulls in torch at import

        m = self.topo.model
        if cut == "cloud_only":
            return Job(cut, {}, codec.encode_image(frame, m.cloud_only_upload, m.jpeg_quality), 0.0)
        with torch.inference_mode():
            out = self._device_parts[cut](preprocess([frame], self.device))
        meta, payload = codec.encode_tensor(out[0].cpu().numpy(), m.codec.dtype, m.codec.zstd_level)
        return Job(cut, {"codec": meta}, payload, 0.0)

    def _tail_ms(self, cut: str, n: int) -> float:
        """The profile's time for a batch of n at `cut` (a cut it does not list: by the catalogue's FLOPs share)."""
        return self.hw.tail_ms(cut, n, self.flops_share.get(cut.partition("+")[0]))

    def _item_ms(self, cut: str) -> float:
        return self._tail_ms(cut, 1)

    def _compute(self, kind: str, jobs: list[Job]) -> list[Outcome]:
        """Decode every payload for real (that cost belongs to the tier); an item that does not decode fails alone."""
        t0 = now()
        keys = [_key(kind, j.payload) for j in jobs]
        items, errors = decode_items(kind, jobs, self.topo.model)
        misses = [i for i, k in enumerate(keys) if i not in errors and k not in self._memo]
        fresh = dict(zip(misses, self._top1(kind, self._stack(kind, [items[i] for i in misses])), strict=True)) \
            if misses else {}
        for i, c in fresh.items():
            if len(self._memo) < MEMO_LIMIT:
                self._memo[keys[i]] = c
        top1 = {i: fresh[i] if i in fresh else self._memo[keys[i]] for i in items}
        n = len(items)
        if n:
            t_end = t0 + self._tail_ms(kind, n) / 1000
            remaining = t_end - now()
            if remaining > 0:
                hold_until(t_end)  # holds the executor, as the accelerator would be held
            else:
                self.overruns += 1
                self.max_overrun_ms = max(self.max_overrun_ms, -remaining * 1000)
        t1 = now()
        self.misses += len(misses)
        if n:
            with self._counters_lock:
                self._count_batch(n, t1 - t0)
        return [Outcome(top1.get(i, -1), t0, (t1 - t0) * 1000, n, errors.get(i)) for i in range(len(jobs))]

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "device": f"{self.device}, profile {self.hw.name}",
                "hardware": self.hw.name, "overrun_batches": self.overruns,
                "max_overrun_ms": round(self.max_overrun_ms, 3), "precomputed_answers": self.precomputed,
                "computed_on_arrival": self.misses,
                "host_kept_up": self.overruns == 0}


def hold_until(t_end: float) -> None:
    """Block this thread until `t_end` (clock.now): sleep to within a millisecond, then yield until it is due.
    A plain sleep overshoots by 0.1-0.5 ms on a loaded host, which is 10% of a GPU's batch-of-one time."""
    coarse = t_end - now() - SPIN_S
    if coarse > 0:
        time.sleep(coarse)
    while now() < t_end:
        time.sleep(0)
