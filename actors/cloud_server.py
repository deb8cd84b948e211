"""Cloud server: TCP ingress, dynamic batcher, restoration + tail on CPU or GPU.

A plain asyncio class, run as a Ray actor by the orchestrator (`ray.remote`)
and directly in tests. Each device holds one TCP connection; the first frame
(`hello`) carries the replica's token and the device's id (testbed.domain.ingress), and
every response is sent through the downlink shaper the run's configuration gives
that device. Requests of one kind (butterfly
features, cloud-only JPEGs) are batched together; all batches share one
executor thread, as they would share one accelerator. A full queue rejects
with a reason instead of dropping. Queue wait and batch compute are measured
on this server's clock and sent back in the response header.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testbed.base import codec, stamped_stream, wire
from testbed.base.clock import BOOT_ID, now, same_clock
from testbed.base.event_loop import running_loop_name
from testbed.base.stamped_stream import StampedReader
from testbed.base.wire import ProtocolError, encode_frame, read_frame
from testbed.config.schema import ModelSpec, Topology
from testbed.domain import ingress, split_policy
from testbed.domain.batching import DynamicBatcher
from testbed.domain.host import ProcessUsage, cpu_model, freeze_heap, ray_node_id, ray_node_ip
from testbed.plan.devices import device_table
from throttling.links import LinkBackend, userspace_part
from throttling.netns import socket_in_netns
from throttling.shaper import LinkDirection, LinkShaper

log = logging.getLogger(__name__)
LOAD_SAMPLE_S = 0.5
CALIBRATION_RUNS = 3


def calibrate(run: Callable[[int], None], sizes: tuple[int, ...]) -> dict[int, float]:
    """Fastest wall time (ms) of `run(n)` for each batch size n, after one warm-up call.

    The fastest run, not the median: replicas calibrate while the pools calibrate too, and on a small host
    that contention inflated the median 2-3 times (a replayed cloud became the bottleneck of a density run;
    the devices' split predictions took the JPEG's cloud time for twice what it was). The fastest of a few
    runs is the host's uncontended time. `run` must wait for the device (CUDA is asynchronous)."""
    out = {}
    for n in sizes:
        run(n)
        times = []
        for _ in range(CALIBRATION_RUNS):
            t0 = now()
            run(n)
            times.append((now() - t0) * 1000)
        out[n] = min(times)
    return out


@dataclass
class Job:
    kind: str
    header: dict[str, Any]
    payload: bytes
    t_received: float


@dataclass
class Outcome:
    top1: int
    t_batch_start: float
    cloud_ms: float
    batch_size: int
    error: str | None = None  # this item alone failed (its payload did not decode); the rest of the batch ran


@dataclass
class Peer:
    """One connection's bytes received and not yet answered (testbed.domain.ingress bounds them)."""

    writer: asyncio.StreamWriter
    in_flight_bytes: int = 0


@dataclass
class Counters:
    """Work done by a replica, over the whole run (ServerStats) or one sampling window."""

    busy_s: float = 0.0
    completed: int = 0
    rejected: int = 0
    batch_items: int = 0
    batches: int = 0
    arrivals: int = 0

    def add_batch(self, n: int, busy_s: float) -> None:
        self.batches += 1
        self.batch_items += n
        self.completed += n
        self.busy_s += busy_s

    @property
    def mean_batch_size(self) -> float:
        return self.batch_items / self.batches if self.batches else 0.0


@dataclass
class ServerStats(Counters):
    bad_frames: int = 0
    max_queue_depth: int = 0
    batch_histogram: dict[int, int] = field(default_factory=dict)


def decode_items(kind: str, jobs: list[Job], model: ModelSpec) -> tuple[dict[int, Any], dict[int, str]]:
    """Each job's decoded payload by index, or the reason it did not decode; the payloads are released (a
    connection that does not read its answers then holds a small reply, not the frame)."""
    items: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for i, j in enumerate(jobs):
        try:
            items[i] = codec.decode_image(j.payload, model.cloud_only_upload, model.input_size) \
                if kind == "cloud_only" else codec.decode_tensor(j.header["codec"], j.payload)
        except Exception as e:  # noqa: BLE001 - this item's own error record
            errors[i] = f"{type(e).__name__}: {e}"
        j.payload = b""
    return items, errors


def fault_windows(header: dict[str, Any], t_received: float) -> list[tuple[float, float, float]]:
    """A device's fault windows on this server's clock: as sent on one host; shifted by the send time (the
    frame's transit, a few ms, is then the error) across hosts."""
    shift = 0.0 if same_clock(header.get("boot_id")) else t_received - float(header["t_sent"])
    return [(float(a) + shift, float(b) + shift, float(f)) for a, b, f in header["windows"]]


class CloudServer:
    def __init__(self, replica: int, topology_json: str, net: dict[str, Any] | None = None):
        self.replica = replica
        self.net = net  # namespaces of the tc backend, or None
        self.topo = Topology.model_validate_json(topology_json)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cloud{replica}")
        self._batchers: dict[str, DynamicBatcher[Job, Outcome]] = {}  # one per cut: a batch shares one part
        self._parts: dict[str, Any] = {}  # cut -> the cloud's part of the network
        self._samples: dict[str, Any] = {}  # cut -> one item of what that part takes (for calibration)
        self._device_parts: dict[str, Any] = {}  # cut -> the device's part of the network (None: cloud_only)
        self.flops_share: dict[str, float] = {}  # cut -> share of the model's FLOPs before it (the catalogue)
        self._in_flight = 0
        self._window = Counters()
        self._counters_lock = threading.Lock()  # the executor thread updates, the loop samples
        self._stats = ServerStats()
        self._load_rows: list[dict[str, Any]] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.device = "cpu"
        self.token = ingress.new_token()  # handed to the run's pools with the address (testbed.domain.ingress)
        self._refusals = ingress.RefusalCounts()
        self._limits = ingress.FrameLimits({}, self.topo.model.input_size, len(self.topo.faults))
        self._downlinks: list[LinkDirection] = []  # per device id, from the run's configuration

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str | None = None) -> dict[str, Any]:
        """Build the model, open the ingress; returns its address and what runs where.

        The ingress listens on this node's Ray address (127.0.0.1 for an embedded Ray).
        """
        host = host or ray_node_ip()
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(self._executor, self._build)
        await loop.run_in_executor(self._executor, self._configure_ingress)
        cloud = self.topo.cloud
        for kind in self._parts:
            self._batchers[kind] = DynamicBatcher(
                functools.partial(self._run_batch, kind), cloud.max_batch_size, cloud.max_batch_wait_ms / 1000.0)
        if self.net is None:
            self._server = await stamped_stream.start_server(self._serve, host, 0)
        else:  # listen inside the cloud namespace, where every device's veth ends
            host = self.net["cloud_ip"]
            sock = socket_in_netns(self.net["cloud_ns"])
            sock.bind((host, 0))
            self._server = await stamped_stream.start_server(self._serve, sock=sock)
        port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._sample_load())
        freeze_heap()
        return {"replica": self.replica, "host": host, "port": port, "pid": os.getpid(), "node_id": ray_node_id(),
                "token": self.token, "event_loop": running_loop_name(), **info}

    def _build(self) -> dict[str, Any]:
        """One model copy; the cloud part of every cut the run's policies may send (views into it)."""
        import torch  # torch: seconds to import, only where a model runs

        from testbed.model.split_model import (  # pulls in torch at import
            accuracy_by_cut,
            build_split_model,
            catalogue_rows,
            cut_parts,
        )

        torch.set_num_threads(self.topo.cloud.torch_threads)
        m = self.topo.model
        self.device = "cuda" if self.topo.cloud.device == "cuda" else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("cloud.device is cuda but torch sees no CUDA device on this node")
        sm = build_split_model(m.weights, m.seed, m.split, m.butterfly_channels, m.input_size, arch=m.arch)
        catalogue = catalogue_rows(sm.catalogue)
        self.flops_share = {r["cut"]: r["flops_share"] for r in catalogue}  # a hardware profile's rule for any cut
        sm.full.to(self.device)
        sm.reduction.to(self.device)
        sm.restoration.to(self.device)
        cuts = [c for c in split_policy.cuts_for_run(self.topo.strategies, self.topo.policy.cuts, m.split, catalogue)
                if split_policy.uses_network(c)]
        self._parts, self._samples, self._device_parts = {}, {}, {}
        with torch.inference_mode():  # first calls allocate and pick kernels: keep them out of the run
            x = torch.zeros(1, 3, m.input_size, m.input_size, device=self.device)
            for cut in cuts:
                device_part, cloud_part = cut_parts(sm, cut)
                assert cloud_part is not None
                self._parts[cut] = cloud_part
                self._device_parts[cut] = device_part  # what a device runs first (cloud_profile precomputes)
                self._samples[cut] = device_part(x) if device_part is not None else x
                cloud_part(self._samples[cut])
        name = torch.cuda.get_device_name(0) if self.device == "cuda" else cpu_model()
        adaptive = any(s in split_policy.ADAPTIVE for s in self.topo.strategies)
        measured = self.measure_curves() if self.device == "cuda" and self.topo.cloud.hardware is None else None
        return {"measured_batch_ms": measured,
                "device": self.device, "device_name": name, "torch_threads": torch.get_num_threads(),
                "split_catalogue": catalogue, "cuts": cuts, "accuracy_by_cut": accuracy_by_cut(sm.meta, m.codec.dtype),
                "cut_cloud_ms": self._cut_cloud_ms(cuts, sm) if adaptive else {}}

    def _cut_cloud_ms(self, cuts: list[str], sm: Any) -> dict[str, float]:
        """Each cut's cloud time for one item. On a CPU replica that runs the model, the raw cuts' tails come
        from one set of timed passes along the graph (the whole network less the part before the cut), so tens
        of cuts cost a few forward passes; the JPEG and butterfly cuts, a replayed replica and CUDA (asynchronous)
        calibrate each part."""
        import torch  # torch: seconds to import, only where a model runs

        from testbed.model.cut_catalogue import cumulative_ms  # pulls in torch at import

        upto: dict[str, float] = {}
        total = 0.0
        if self.device == "cpu" and type(self)._item_ms is CloudServer._item_ms:
            with torch.inference_mode():
                upto, total = cumulative_ms(sm.catalogue, torch.zeros(1, 3, self.topo.model.input_size,
                                                                      self.topo.model.input_size))
        return {c: round(total - upto[c] if c in upto else self._item_ms(c), 3) for c in cuts}

    def _configure_ingress(self) -> None:
        """What this run's devices may send (each cut's item shape) and each device's configured downlink."""
        shapes = {c: tuple(x.shape[1:]) for c, x in self._samples.items() if c != "cloud_only"}
        self._limits = ingress.FrameLimits(shapes, self.topo.model.input_size, len(self.topo.faults),
                                            self.topo.model.cloud_only_upload)
        backend = LinkBackend(**self.net["backend"]) if self.net else LinkBackend("userspace")
        self._downlinks = [userspace_part(s.downlink(), backend) for s in device_table(self.topo)]

    def _calibrate_part(self, cut: str, sizes: tuple[int, ...]) -> dict[int, float]:
        """`calibrate` on this cut's cloud part, for batches of `sizes` copies of its sample item."""
        import torch  # torch: seconds to import, only where a model runs

        part, x = self._parts[cut], self._samples[cut]

        def run(n: int) -> None:
            with torch.inference_mode():
                part(x.expand(n, *x.shape[1:]).contiguous())
                if self.device == "cuda":
                    torch.cuda.synchronize()

        return calibrate(run, sizes)

    def measure_curves(self) -> dict[str, dict[int, float]]:
        """This replica's real latency(batch) per cut, for batches of 1 and max_batch_size (recorded at start on a
        GPU, and beside a hardware profile's curve)."""
        sizes = tuple(sorted({1, self.topo.cloud.max_batch_size}))
        return {cut: {n: round(ms, 3) for n, ms in self._calibrate_part(cut, sizes).items()} for cut in self._parts}

    def _item_ms(self, cut: str) -> float:
        """The cloud's time for one item of `cut` (a batch of one), for the devices' split predictions."""
        return self._calibrate_part(cut, (1,))[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for b in self._batchers.values():
            await b.close()
        for t in list(self._tasks):
            t.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ ingress
    async def _serve(self, reader: StampedReader, writer: asyncio.StreamWriter) -> None:
        """One device's connection: its hello, then its frames; a refused frame is counted by its reason. A
        frame is stamped with when its last byte reached this process, not when this coroutine got to it."""
        peer = Peer(writer)
        try:
            try:
                header, _, _ = await asyncio.wait_for(read_frame(reader, ingress.HELLO_MAX_BYTES, 0),
                                                      ingress.HELLO_TIMEOUT_S)
            except (asyncio.TimeoutError, EOFError):
                raise ingress.Refused("no_hello", "no hello frame") from None
            device = ingress.check_hello(header, self.token, len(self._downlinks))
            shaper = LinkShaper(self._downlinks[device], seed=device)
            while True:
                header, payload, _ = await read_frame(reader, ingress.MAX_HEADER_BYTES, self._limits.max_payload_bytes)
                self._frame(header, payload, reader.arrival(), shaper, peer)
        except EOFError:
            pass
        except (ingress.Refused, ProtocolError) as e:
            self._refuse(e.reason, e)
        except (KeyError, TypeError, ValueError) as e:
            self._refuse("garbage", e)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()  # what it had not read is dropped, not flushed

    def _frame(self, header: dict[str, Any], payload: bytes, t_received: float, shaper: LinkShaper,
               peer: Peer) -> None:
        """Act on one frame after the hello; Refused where the connection must close."""
        kind = wire.message_type(header)
        if kind == "phase":  # a new phase: a traced downlink starts over
            shaper.restart()
            return
        if kind == "faults":  # the phase's downlink faults (testbed.plan.faults)
            ingress.check_faults(header, self._limits)
            shaper.set_faults(fault_windows(header, t_received))
            return
        if kind != "infer":
            raise ingress.Refused("unexpected_frame", f"frame type {str(kind)[:40]!r}")
        cost = len(payload) + 1024  # the payload, and the answer until it is written
        if peer.in_flight_bytes + cost > self._limits.max_in_flight_bytes:
            raise ingress.Refused("in_flight", f"{peer.in_flight_bytes} bytes unanswered (the peer does not read); "
                                  f"allowed: {self._limits.max_in_flight_bytes}")
        peer.in_flight_bytes += cost
        try:
            ingress.check_infer(header, payload, self._limits)
        except ingress.Refused as e:  # framing is intact: this request alone is answered with the reason
            self._refuse(e.reason, e)
            reply = wire.error_result(header.get("id"), f"refused: {e}", self.replica)
            self._spawn(self._reply(shaper, peer, reply, cost))
            return
        with self._counters_lock:
            self._stats.arrivals += 1
            self._window.arrivals += 1
        self._spawn(self._handle(Job(wire.request_cut(header), header, payload, t_received), shaper, peer, cost))

    def _refuse(self, reason: str, e: BaseException) -> None:
        self._refusals.add(reason)
        self._stats.bad_frames += 1
        n = self._refusals.total[reason]
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th... of each reason: a flood does not flood the log
            log.warning("replica %d: refused a frame (%s, %d so far): %s", self.replica, reason, n, str(e)[:200])

    async def _handle(self, job: Job, shaper: LinkShaper, peer: Peer, cost: int) -> None:
        rid = job.header.get("id")
        queued = sum(b.queued for b in self._batchers.values())
        self._stats.max_queue_depth = max(self._stats.max_queue_depth, queued)
        if queued >= self.topo.cloud.queue_limit:
            with self._counters_lock:
                self._stats.rejected += 1
                self._window.rejected += 1
            reply = wire.sealed(wire.rejected_result(rid, f"queue_full (limit {self.topo.cloud.queue_limit})",
                                                     self.replica), (now() - job.t_received) * 1000, queued)
            await self._reply(shaper, peer, reply, cost)
            return
        self._in_flight += 1
        try:
            out = await self._batchers[job.kind].submit(job)
            if out.error is not None:
                raise ValueError(out.error)
            reply = wire.ok_result(rid, out.top1, job.t_received, BOOT_ID, (out.t_batch_start - job.t_received) * 1000,
                                   out.cloud_ms, out.batch_size, self.replica)
        except Exception as e:  # noqa: BLE001 - the device records the reason
            reply = wire.error_result(rid, f"cloud error: {e}", self.replica)
        finally:
            self._in_flight -= 1
        reply = wire.sealed(reply, (now() - job.t_received) * 1000, sum(b.queued for b in self._batchers.values()))
        await self._reply(shaper, peer, reply, cost)

    async def _reply(self, shaper: LinkShaper, peer: Peer, reply: dict[str, Any], cost: int) -> None:
        try:
            if not peer.writer.is_closing():
                await shaper.send(peer.writer, encode_frame(reply))
        except (ConnectionError, RuntimeError):
            pass  # the device went away; it records its own timeout or failure
        finally:
            peer.in_flight_bytes -= cost

    # ------------------------------------------------------------ compute
    async def _run_batch(self, kind: str, jobs: list[Job]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._compute, kind, jobs)

    def _compute(self, kind: str, jobs: list[Job]) -> list[Outcome]:
        """One batch through the cut's cloud part; an item that does not decode fails alone."""
        t0 = now()
        items, errors = decode_items(kind, jobs, self.topo.model)
        good = [i for i in range(len(jobs)) if i not in errors]
        top1 = dict(zip(good, self._top1(kind, self._stack(kind, [items[i] for i in good])), strict=True)) \
            if good else {}
        t1 = now()
        n = len(good)
        if n:
            with self._counters_lock:
                self._count_batch(n, t1 - t0)
        return [Outcome(int(top1.get(i, -1)), t0, (t1 - t0) * 1000, n, errors.get(i)) for i in range(len(jobs))]

    def _inputs(self, kind: str, jobs: list[Job]) -> Any:
        """The batch's payloads decoded for real into the cloud part's input tensor (every one must decode)."""
        items, errors = decode_items(kind, jobs, self.topo.model)
        if errors:
            raise ValueError(f"{len(errors)} of {len(jobs)} items did not decode: {next(iter(errors.values()))}")
        return self._stack(kind, [items[i] for i in range(len(jobs))])

    def _stack(self, kind: str, items: list[Any]) -> Any:
        """Decoded items as one input tensor: preprocessed images (cloud_only) or stacked feature maps."""
        import torch  # torch: seconds to import, only where a model runs

        from testbed.model.split_model import preprocess  # pulls in torch at import

        if kind == "cloud_only":
            return preprocess(items, self.device)
        # a feature map: restoration (butterfly cuts) and the rest of the network
        return torch.from_numpy(np.stack(items)).to(self.device)

    def _top1(self, kind: str, x: Any) -> list[int]:
        import torch  # torch: seconds to import, only where a model runs

        with torch.inference_mode():
            return [int(c) for c in self._parts[kind](x).argmax(dim=1).tolist()]

    def _count_batch(self, n: int, busy_s: float) -> None:
        self._stats.add_batch(n, busy_s)
        self._stats.batch_histogram[n] = self._stats.batch_histogram.get(n, 0) + 1
        self._window.add_batch(n, busy_s)

    # ------------------------------------------------------------ load reports
    async def _sample_load(self) -> None:
        usage = ProcessUsage(gpu=self.device == "cuda")
        t_prev = now()
        t_start = t_prev
        while True:
            await asyncio.sleep(LOAD_SAMPLE_S)
            t = now()
            with self._counters_lock:
                w, self._window = self._window, Counters()
            dt = t - t_prev
            t_prev = t
            refused = self._refusals.take_window()
            self._load_rows.append({
                "replica": self.replica, "t_s": round(t - t_start, 3),
                "arrivals_per_s": round(w.arrivals / dt, 3), **usage.sample(),
                "queue_depth": sum(b.queued for b in self._batchers.values()),
                "in_flight": self._in_flight,
                "batch_size": round(w.mean_batch_size, 3),
                "busy_fraction": round(min(1.0, w.busy_s / dt), 4),
                "completed_per_s": round(w.completed / dt, 3),
                "rejected": w.rejected,
                "refused": refused[0], "refused_reasons": refused[1],
            })

    def drain_load(self) -> list[dict[str, Any]]:
        rows, self._load_rows = self._load_rows, []
        return rows

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "replica": self.replica, "device": self.device, "requests": s.arrivals,
            "completed": s.completed, "rejected": s.rejected, "bad_frames": s.bad_frames,
            "refused": dict(sorted(self._refusals.total.items())),  # by reason (testbed.domain.ingress.REASONS)
            "batches": s.batches, "mean_batch_size": s.mean_batch_size,
            "busy_s": s.busy_s, "max_queue_depth": s.max_queue_depth,
            "batch_histogram": {str(k): v for k, v in sorted(s.batch_histogram.items())},
        }
