"""A real CloudServer on loopback in its own process, for the hostile-frame tests (tests/test_ingress.py).

`python tests/serve_replica.py TOPOLOGY.yaml` prints one JSON line (address, token, pid, the feature cut's
item shape) once the replica listens, then serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.cloud_server import CloudServer  # noqa: E402
from testbed.config.loading import load_topology  # noqa: E402


async def main(path: str) -> None:
    topo = load_topology(path)
    server = CloudServer(0, topo.model_dump_json())
    addr = await server.start("127.0.0.1")
    shapes = {c: list(s) for c, s in server._limits.item_shapes.items()}
    print(json.dumps({"host": addr["host"], "port": addr["port"], "token": addr["token"], "pid": addr["pid"],
                      "shapes": shapes}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    print(json.dumps(server.stats()), flush=True)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
