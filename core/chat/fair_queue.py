"""First come, first served access to a model that answers one turn at a time.

Every session that wants the model takes a ticket; tickets are served in the order they were
taken (a plain lock lets any waiter in, so a busy process can starve one user). A waiting ticket
knows how many turns are ahead of it, which the page shows.

    ticket = queue_for(model.lock).join()
    try:
        while not ticket.wait(timeout=0.5):
            show(ticket.ahead)
        ...  # use the model
    finally:
        ticket.leave()
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque


class FairQueue:
    """A FIFO queue in front of a lock; whoever reaches the head also takes the lock.

    The lock itself stays the model's: code that takes it directly still excludes the queue's
    holder, and the queue's holder waits for it like anyone else.
    """

    def __init__(self, lock: threading.Lock | None = None):
        self.lock = lock or threading.Lock()
        self._changed = threading.Condition()
        self._line: deque[Ticket] = deque()  # the holder (if any) first, then the waiters in order

    def join(self) -> "Ticket":
        ticket = Ticket(self)
        with self._changed:
            self._line.append(ticket)
        return ticket

    def __len__(self) -> int:
        """Tickets in the line, the one being served included."""
        with self._changed:
            return len(self._line)

    def _ahead(self, ticket: "Ticket") -> int:
        with self._changed:
            return self._line.index(ticket) if ticket in self._line else 0

    def _wait(self, ticket: "Ticket", timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        with self._changed:
            if ticket not in self._line:
                raise RuntimeError("this ticket has left the queue")
            while self._line[0] is not ticket:
                if left() == 0.0:
                    return False
                self._changed.wait(left())
        # Only the head gets here, so only one thread at a time waits on the lock.
        remaining = left()
        return self.lock.acquire(timeout=-1 if remaining is None else remaining)

    def _leave(self, ticket: "Ticket") -> None:
        with self._changed:
            if ticket in self._line:
                self._line.remove(ticket)
            self._changed.notify_all()


class Ticket:
    """One turn's place in a FairQueue."""

    def __init__(self, queue: FairQueue):
        self.queue = queue
        self.holding = False  # True once wait() returned True, until leave()

    @property
    def ahead(self) -> int:
        """Turns before this one: the one being answered and those waiting in front (0: next)."""
        return 0 if self.holding else self.queue._ahead(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to timeout seconds (None: for ever) for this ticket's turn; True when it holds the lock."""
        if not self.holding:
            self.holding = self.queue._wait(self, timeout)
        return self.holding

    def leave(self) -> None:
        """Give the lock back (when holding it) or give up the place in the line. Safe to call twice."""
        if self.holding:
            self.holding = False
            self.queue.lock.release()
        self.queue._leave(self)


_queues: "weakref.WeakKeyDictionary[object, FairQueue]" = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def queue_for(lock: threading.Lock) -> FairQueue:
    """The one FairQueue in front of this lock (a model's), made on first use."""
    with _queues_lock:
        queue = _queues.get(lock)
        if queue is None:
            queue = _queues[lock] = FairQueue(lock)
        return queue
