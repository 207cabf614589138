"""Reading ahead of the caller on a thread of its own: the sender's next page of recipients."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator


class ReadAhead(Iterator):
    """Iterates `items` from a background thread, at most `buffer` items ahead of the caller.

    The shard's next page is read while the current one is being sent: a Query page takes the
    store a moment to answer, and reading it on the send loop would pause every send meanwhile.
    """

    _END = object()

    def __init__(self, items: Iterable, buffer: int):
        self._items: queue.Queue = queue.Queue(maxsize=buffer)
        self._closed = threading.Event()
        self._done = False
        threading.Thread(target=self._fill, args=(items,), name="read-ahead", daemon=True).start()

    def _fill(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._END)
        except Exception as error:  # handed to the caller, raised where it iterates
            self._put(error)

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._items.put(item, timeout=0.5)  # wakes now and then to see whether it was closed
                return True
            except queue.Full:
                continue
        return False

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._items.get()
        if item is self._END:
            self._done = True
            raise StopIteration
        if isinstance(item, Exception):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        """The caller stops early: the reader thread ends instead of reading on."""
        self._closed.set()
        self._done = True
