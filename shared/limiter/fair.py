"""Two-class waiting line: interactive first, bulk never starved.

After ``burst`` interactive picks in a row while bulk waits, the next pick is bulk.

>>> line: FairLine[str] = FairLine(burst=2)
>>> for x in ("b1", "b2"): line.push("bulk", x)
>>> for x in ("i1", "i2", "i3"): line.push("interactive", x)
>>> [line.pop() for _ in range(5)]
['i1', 'i2', 'b1', 'i3', 'b2']
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from shared.limiter.base import Priority

T = TypeVar("T")


class FairLine(Generic[T]):
    def __init__(self, *, burst: int = 4) -> None:
        self.burst = max(1, burst)
        self._q: dict[Priority, deque[T]] = {"interactive": deque(), "bulk": deque()}
        self._streak = 0

    def push(self, priority: Priority, item: T) -> None:
        self._q[priority].append(item)

    def __len__(self) -> int:
        return len(self._q["interactive"]) + len(self._q["bulk"])

    def counts(self) -> dict[Priority, int]:
        return {p: len(q) for p, q in self._q.items()}

    def _next_class(self) -> Priority | None:
        inter, bulk = self._q["interactive"], self._q["bulk"]
        if inter and (not bulk or self._streak < self.burst):
            return "interactive"
        if bulk:
            return "bulk"
        return None

    def peek(self) -> T | None:
        cls = self._next_class()
        return self._q[cls][0] if cls is not None else None

    def pop(self) -> T:
        cls = self._next_class()
        if cls is None:
            raise IndexError("pop from an empty FairLine")
        self._streak = self._streak + 1 if cls == "interactive" else 0
        return self._q[cls].popleft()

    def remove(self, item: T) -> bool:
        for q in self._q.values():
            try:
                q.remove(item)
                return True
            except ValueError:
                continue
        return False
