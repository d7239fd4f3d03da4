"""Group commit: the submissions that arrive together in one process share one transaction.

A web process with several threads (gunicorn's ``gthread`` workers, ``runserver``) receives form posts
concurrently. Each needs the same round trips (lock, duplicate check, INSERTs, the audit chain's lock, COMMIT),
and the audit chain serialises them anyway. A GroupCommitter lets the first caller with nothing in progress
become the *leader*: it takes every item waiting at that moment (up to ``max_batch``), runs them through
``process`` in one call, hands each caller its own result, and steps down; callers that arrived meanwhile form
the next batch, led by one of them. Nobody waits for a timer: a caller alone is served at once, and under load
the batch grows by itself to whatever arrived during the previous commit.

A batch that fails is run again one item per call, so one bad item (or a rare conflict) gives its own caller
its own error and the others still succeed. Every caller gets a result or an exception; none is left waiting.
With one thread per process (gunicorn's sync workers) every batch holds one item and the path is the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommitter(Generic[Item, Result]):
    """Run ``process(items) -> results`` (same length, same order) for items submitted from many threads."""

    def __init__(self, process: Callable[[Sequence[Item]], Sequence[Result]], *, max_batch: int = 50) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._process = process
        self._max_batch = max_batch
        self._changed = threading.Condition()
        self._waiting: list[_Slot[Item, Result]] = []
        self._leading = False

    def submit(self, item: Item) -> Result:
        """Process ``item`` (alone or with others) and return its result, or raise its exception."""
        slot: _Slot[Item, Result] = _Slot(item)
        with self._changed:
            self._waiting.append(slot)
        while True:
            with self._changed:
                while not slot.done and self._leading:
                    self._changed.wait()
                if slot.done:
                    break
                self._leading = True
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
            try:
                self._run(batch)
            except BaseException:
                # Only a shutdown-type exception gets here. This caller's own item may be waiting still (the
                # batch it led held others): take it back, so that it is not committed after its caller was
                # told it failed.
                with self._changed:
                    if slot in self._waiting:
                        self._waiting.remove(slot)
                raise
            finally:
                with self._changed:
                    for other in batch:
                        if not other.done:  # only when _run itself was interrupted
                            other.error = RuntimeError("the batch this submission was in did not finish")
                            other.done = True
                    self._leading = False
                    self._changed.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[Item, Result]]) -> None:
        try:
            results = self._process([slot.item for slot in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done = True
                return
            # Find the item at fault: each on its own now, so the others are not refused for it.
            for slot in batch:
                try:
                    slot.result = self._process([slot.item])[0]
                except Exception as single_exc:
                    slot.error = single_exc
                slot.done = True
            return
        if len(results) != len(batch):
            error = RuntimeError(f"process returned {len(results)} results for {len(batch)} items")
            for slot in batch:
                slot.error = error
                slot.done = True
            return
        for slot, result in zip(batch, results, strict=True):
            slot.result = result
            slot.done = True
