"""Training curves: bounded series of (step, value) points, and their display smoothing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["Curve", "smooth"]


class Curve:
    """A bounded series of ``(step, value)`` points.

    Points are binned: each stored point is the mean of ``stride`` consecutive inputs (its
    step is the last one's). When more than ``max_points`` are stored, neighbouring pairs are
    averaged and ``stride`` doubles, so memory never exceeds ``max_points`` points.
    """

    __slots__ = ("_acc", "_count", "_last_step", "max_points", "steps", "stride", "values")

    def __init__(self, max_points: int = 2000):
        self.max_points = max(4, int(max_points))
        self.steps: list[int] = []
        self.values: list[float] = []
        self.stride = 1
        self._acc = 0.0
        self._count = 0
        self._last_step = 0

    def append(self, step: int, value: float) -> None:
        self._acc += value
        self._count += 1
        self._last_step = step
        if self._count >= self.stride:
            self.steps.append(step)
            self.values.append(self._acc / self._count)
            self._acc, self._count = 0.0, 0
            if len(self.values) > self.max_points:
                self._halve()

    def _halve(self) -> None:
        n = len(self.values) // 2 * 2
        vals = [(self.values[i] + self.values[i + 1]) / 2 for i in range(0, n, 2)]
        steps = [self.steps[i + 1] for i in range(0, n, 2)]
        if n < len(self.values):  # an odd point out: keep it as a partial bin
            self._acc += self.values[-1] * self.stride
            self._count += self.stride
        self.values, self.steps = vals, steps
        self.stride *= 2

    def points(self) -> tuple[list[int], list[float]]:
        """The stored points plus the partial bin being filled (so the latest step shows)."""
        if self._count:
            return self.steps + [self._last_step], self.values + [self._acc / self._count]
        return list(self.steps), list(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def copy(self) -> Curve:
        """An independent copy (the points, the stride and the partial bin)."""
        c = Curve(self.max_points)
        c.steps, c.values, c.stride = list(self.steps), list(self.values), self.stride
        c._acc, c._count, c._last_step = self._acc, self._count, self._last_step
        return c

    def to_json(self) -> dict:
        steps, values = self.points()
        return {"steps": steps, "values": values, "stride": self.stride}

    @classmethod
    def from_json(cls, d: Mapping, max_points: int = 2000) -> Curve:
        """A curve from :meth:`to_json`; longer than ``max_points``, thinned as recording
        would have (pairs averaged, ``stride`` doubled)."""
        c = cls(max_points)
        c.steps = [int(s) for s in d["steps"]]
        c.values = [float(v) for v in d["values"]]
        c.stride = int(d.get("stride", 1))
        while len(c.values) > c.max_points:
            c._halve()
        return c


def smooth(values: Sequence[float], weight: float = 0.6) -> list[float]:
    """TensorBoard-style exponential moving average with debiasing (``weight`` in [0, 1))."""
    out: list[float] = []
    last, n = 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n) if weight > 0 else v)
    return out
