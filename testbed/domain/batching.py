"""Dynamic batching: gather requests until the batch is full or the oldest waited max_wait.

A small asyncio class with no Ray and no torch (as Ray Serve keeps its batch
queue), so it is tested on its own. An exception raised by the batch function
reaches every caller of that batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from testbed.base.clock import now

T = TypeVar("T")
R = TypeVar("R")


class DynamicBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R]]],
                 max_batch_size: int, max_wait_s: float):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R], float]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def submit(self, item: T) -> R:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut, now()))
        return await fut

    async def _collect(self) -> list[tuple[T, asyncio.Future[R], float]]:
        batch = [await self._queue.get()]
        deadline = batch[0][2] + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - now()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            self.batch_sizes.append(len(batch))
            try:
                results = await self._run_batch([item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)}")
            except Exception as e:  # noqa: BLE001 - every waiter gets the error
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut, _), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("batcher closed"))


__all__ = ["DynamicBatcher"]
