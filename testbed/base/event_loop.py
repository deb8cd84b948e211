"""Which asyncio event loop runs the pools and replicas: uvloop where it is installed, asyncio's own otherwise.

Ray builds each async actor's loop itself (`ray._private.async_compat.get_new_event_loop`): uvloop when the
package imports and `RAY_USE_UVLOOP` is not 0, asyncio's selector loop otherwise. So the choice is made by
installing uvloop (a dependency) and can be turned off per run with `RAY_USE_UVLOOP=0` in the environment
(benchmarks/density.py compares the two). Code that runs its own loop (tests, benchmarks) uses `new_loop`,
which follows the same rule, and every actor reports `running_loop_name()` so a run says which loop ran.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # optional at run time: asyncio's loop is the fallback
    uvloop = None

T = TypeVar("T")
ENV = "RAY_USE_UVLOOP"  # Ray's own switch, read the same way here


def uvloop_wanted() -> bool:
    return uvloop is not None and os.environ.get(ENV, "1").lower() not in ("0", "false", "no")


def new_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind Ray's actors get: uvloop when installed and not turned off."""
    return uvloop.new_event_loop() if uvloop is not None and uvloop_wanted() else asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def running_loop_name() -> str:
    """`uvloop` or `asyncio`: the loop this coroutine runs on."""
    return loop_name(asyncio.get_running_loop())


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] = new_loop) -> T:
    """asyncio.run on a loop from `factory` (uvloop by default, as in the actors)."""
    loop = factory()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
