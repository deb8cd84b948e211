"""One bad item fails only itself: the rest of its batch is computed and answered (CloudServer._compute)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from actors.cloud_replay import ReplayCloudServer
from actors.cloud_server import CloudServer, Job
from testbed.base import codec
from testbed.config.loading import load_topology

pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize("server_cls", [CloudServer, ReplayCloudServer])
def test_a_malformed_job_gets_its_own_error_and_the_batch_is_answered(write_topology, minimal_yaml, server_cls):
    topo = load_topology(write_topology(minimal_yaml), ["strategies=[butterfly]"])

    async def go():
        cloud = server_cls(0, topo.model_dump_json())
        await cloud.start("127.0.0.1")
        try:
            cut = next(iter(cloud._parts))
            shape = tuple(cloud._samples[cut].shape[1:])
            meta, payload = codec.encode_tensor(np.ones(shape, np.float32), "int8", 3)
            good = [Job(cut, {"codec": meta}, payload, 0.0) for _ in range(3)]
            bad = Job(cut, {"codec": {**meta, "shape": [1, 2, 3]}}, payload, 0.0)  # does not reshape
            jobs = [good[0], bad, good[1], good[2]]
            return cloud._compute(cut, jobs), cloud.stats(), jobs
        finally:
            await cloud.stop()

    out, stats, jobs = asyncio.run(go())
    assert [o.error is None for o in out] == [True, False, True, True]
    assert "reshape" in out[1].error or "ValueError" in out[1].error
    assert all(o.batch_size == 3 for o in out) and stats["completed"] == 3
    if server_cls is CloudServer:
        assert out[0].top1 == out[2].top1 == out[3].top1 >= 0  # the same input: the same class
    assert all(j.payload == b"" for j in jobs)  # released once decoded
