"""Draw the next batches on a background thread while the current step runs.

Both train loops wrap their `BatchIterator` in `Prefetch`: a daemon thread draws the next
`depth` batches (masking is numpy, ~ms per batch) and hands each to `place`, the twin's own
"put it on the device" (torchbert: pinned memory and a non-blocking copy; jaxbert: its layout's
`put_batch`, i.e. `device_put` / `make_array_from_process_local_data`). The step then finds its
batch already on the device and the host never waits for data.

Exact resume needs the data position of the last batch the *loop* took, not of the last batch
the thread drew: each batch travels with `BatchIterator.state()` as it was right after drawing
it, and `Prefetch.state()` returns the state of the batch most recently handed out.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

from bertcore.data.batches import BatchIterator


class Prefetch(Iterator[Any]):
    def __init__(self, batches: BatchIterator, place: Callable[[dict], Any] = lambda b: b,
                 depth: int = 2):
        self._state = batches.state()            # before any batch: where a resume restarts
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(batches, place),
                                        name="twinbert-prefetch", daemon=True)
        self._thread.start()

    def _fill(self, batches: BatchIterator, place: Callable[[dict], Any]) -> None:
        try:
            while not self._stop.is_set():
                batch = next(batches)
                item = (place(batch), batches.state())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:   # hand it to the loop, which raises it as its own
            self._queue.put((None, e))

    def __next__(self) -> Any:
        placed, state = self._queue.get()
        if isinstance(state, BaseException):
            self.close()
            raise state
        self._state = state
        return placed

    def state(self) -> dict[str, Any]:
        """The data position after the last batch returned by `next` (for checkpoints)."""
        return self._state

    def close(self) -> None:
        self._stop.set()
        try:                              # unblock a thread waiting for room in the queue
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        # The thread sees the stop within 0.1 s of finishing the batch it is drawing; wait for
        # it (a generous bound, not forever): a daemon thread still inside a framework's C++
        # call when the interpreter exits can abort the process.
        self._thread.join(timeout=120)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
