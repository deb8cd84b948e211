#!/usr/bin/env python3
"""Cloud-tier efficiency: the serving tier at saturation against plain batched torch, side by side.

    python benchmarks/cloud_efficiency.py [--device cpu|cuda] [--batch 8] [--seconds 10]

1. Raw: restoration + tail (the butterfly's cloud part) in plain torch, fed
   ready tensors in batches of --batch, back to back: items/s.
2. Tier: the same model behind the real CloudServer (TCP ingress, frame
   parsing, int8+zstd decode, dynamic batcher, executor hop, responses), kept
   saturated by --clients closed-loop connections on loopback sending real
   encoded feature frames with no emulated link: completed/s.
The ratio tier/raw is the efficiency (target: >= 0.90). The per-request
overhead of ingress + batcher with no model is printed from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from link_and_overhead import FAST_LTE, _raw_tcp_rtts, _testbed_rtts  # noqa: E402

from actors.cloud_server import CloudServer  # noqa: E402
from testbed.base import codec  # noqa: E402
from testbed.base.wire import encode_frame, read_frame  # noqa: E402
from testbed.config.loading import load_topology  # noqa: E402
from testbed.domain.split_policy import butterfly_cut  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _features(topo, n: int) -> list[tuple[dict, bytes, np.ndarray]]:
    """Real butterfly outputs of real frames: (codec meta, payload, decoded tensor)."""
    import torch

    from testbed.domain.frames import make_frames
    from testbed.model.split_model import build_split_model, preprocess

    m = topo.model
    sm = build_split_model(m.weights, m.seed, m.split, m.butterfly_channels, m.input_size, arch=m.arch)
    out = []
    with torch.inference_mode():
        for frame in make_frames(None, m.input_size, n, seed=1):
            feat = sm.device_part()(preprocess([frame]))[0].numpy()
            meta, payload = codec.encode_tensor(feat, m.codec.dtype, m.codec.zstd_level)
            out.append((meta, payload, codec.decode_tensor(meta, payload)))
    return out


def raw_throughput(topo, feats, batch: int, seconds: float, device: str) -> float:
    import torch

    from testbed.model.split_model import build_split_model

    m = topo.model
    torch.set_num_threads(topo.cloud.torch_threads)
    sm = build_split_model(m.weights, m.seed, m.split, m.butterfly_channels, m.input_size, arch=m.arch)
    model = sm.cloud_part().to(device)
    x = torch.from_numpy(np.stack([f[2] for f in feats[:batch]])).to(device)
    with torch.inference_mode():
        model(x)  # warm-up
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x).argmax(dim=1).tolist()  # the same host sync the server does
            done += batch
        return done / (time.perf_counter() - t0)


async def tier_throughput(topo, feats, clients: int, seconds: float) -> tuple[float, float]:
    server = CloudServer(0, topo.model_dump_json())
    addr = await server.start("127.0.0.1")
    frames = [encode_frame({"type": "infer", "id": 0, "kind": butterfly_cut(topo.model.split), "codec": meta},
                           payload)
              for meta, payload, _ in feats]
    done, statuses = 0, {}
    stop = time.perf_counter() + seconds + 2

    async def client(i: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(addr["host"], addr["port"])
        writer.write(encode_frame({"type": "hello", "device_id": i, "token": addr["token"]}))
        k = i
        while time.perf_counter() < stop:
            writer.write(frames[k % len(frames)])
            await writer.drain()
            reply, _, _ = await read_frame(reader)
            statuses[reply["status"]] = statuses.get(reply["status"], 0) + 1
            if stop - seconds < time.perf_counter() <= stop and reply["status"] == "ok":  # after 2 s of warm-up
                done += 1
            k += 1
        writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    stats = server.stats()
    await server.stop()
    if set(statuses) != {"ok"}:
        raise RuntimeError(f"the tier answered {statuses}: not a clean saturation run")
    return done / seconds, stats["mean_batch_size"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    overrides = [*FAST_LTE, f"cloud.max_batch_size={args.batch}", "cloud.max_batch_wait_ms=5",
                 f"cloud.device={args.device}"]
    if args.device == "cuda":
        overrides.append("cloud.num_gpus=1")
    topo = load_topology(ROOT / "topologies/lte_100devices.yaml", overrides)
    feats = _features(topo, 32)
    raw = raw_throughput(topo, feats, args.batch, args.seconds, args.device)
    tier, mean_batch = asyncio.run(tier_throughput(topo, feats, args.clients, args.seconds))
    tb = statistics.median(asyncio.run(_testbed_rtts(1000)))
    raw_rtt = statistics.median(asyncio.run(_raw_tcp_rtts(1000, 3800)))
    print(f"== cloud tier efficiency ({args.device}, torch threads {topo.cloud.torch_threads}, "
          f"max batch {args.batch}, {args.clients} closed-loop clients)")
    print(f"{'raw batched torch (restoration + tail)':<52}{raw:>10.1f} items/s")
    print(f"{'serving tier at saturation':<52}{tier:>10.1f} req/s   (mean batch {mean_batch:.2f})")
    print(f"{'efficiency tier/raw':<52}{tier / raw:>10.3f}   (target >= 0.90)")
    print(f"{'ingress + batcher overhead per request, no model':<52}{tb - raw_rtt:>10.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
