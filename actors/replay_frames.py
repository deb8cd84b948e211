"""The replayed heads of every pool, prepared once per run, so pools that only replay never load torch.

With `pools.compute: replay` no device computes during the run: each request reuses one of its pool's frames,
computed at start. Building the model and timing it in every pool left each pool holding torch and a model copy
(about 0.9 GB resident) for the whole run, for nothing after its first seconds. Here one Ray task builds the
model once, times it, records every pool's frames at every cut, and returns each pool's heads without the
network parts; each pool gets its own through the object store. The task's worker exits when it is done
(`max_calls=1`), taking torch's memory with it.
"""

from __future__ import annotations

from actors.heads import Heads
from testbed.config.schema import Topology


def prepare_replays(topology_json: str, pools: list[tuple[int, bool]]) -> tuple[Heads, ...] | Heads:
    """Each pool's replayed heads, in `pools`' order: (pool id, whether its devices need the full model timed).

    The model is built and timed once, with the first pool's frames; every pool then records its own frames
    (seeded by its id, as a pool building its own heads does). One pool: its heads alone (Ray's num_returns=1)."""
    topo = Topology.model_validate_json(topology_json)
    first_id, _ = pools[0]
    built = Heads(topo, first_id)
    built.build(with_full_model=any(full for _, full in pools))
    out = []
    for pool_id, full in pools:
        heads = built.for_pool(pool_id, full)
        heads.record_replays()
        out.append(heads.without_models())
    return out[0] if len(out) == 1 else tuple(out)
