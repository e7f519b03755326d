"""Min/max bucket downsampling that keeps every spike and every non-finite point.

A chart of N points on a screen of W pixels needs, per pixel column, only the lowest and
the highest value in it: that draws the same envelope as all N points. So the step range
is cut into equal buckets and each keeps its minimum and maximum; the first and last point
are kept besides, and the non-finite points (all of them when there are no more than
buckets, else the first NaN, +Infinity and -Infinity of each bucket that has one), so
nothing a user must see disappears. The store picks the candidates; this module chooses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Points(NamedTuple):
    steps: np.ndarray
    values: np.ndarray
    walls: np.ndarray

    @classmethod
    def empty(cls) -> Points:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    @classmethod
    def of(cls, rows: list[tuple]) -> Points:
        """From (step, value, wall_time) rows; a NULL value is SQLite's NaN."""
        if not rows:
            return cls.empty()
        steps, values, walls = zip(*rows)
        return cls(np.array(steps, np.int64), np.array(values, np.float64), np.array(walls, np.float64))

    def take(self, index: np.ndarray) -> Points:
        return Points(self.steps[index], self.values[index], self.walls[index])

    def __len__(self) -> int:
        return len(self.steps)


def concat(*parts: Points) -> Points:
    return Points(*(np.concatenate([getattr(p, f) for p in parts]) for f in Points._fields))


def buckets_of(steps: np.ndarray, lo: int, hi: int, n: int) -> np.ndarray:
    """Bucket index 0..n-1 of each step in [lo, hi]; floats avoid int64 overflow."""
    span = float(hi - lo + 1)
    return np.minimum(((steps - lo) / span * n).astype(np.int64), n - 1)


def group_starts(*keys: np.ndarray) -> np.ndarray:
    """Indices where any of the sorted `keys` changes: the starts of contiguous groups."""
    change = np.zeros(len(keys[0]), dtype=bool)
    change[0] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _first_per_group(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The first index of `order` in each run of equal `keys[order]`."""
    return order[group_starts(keys[order])] if len(order) else order


def bucket_extremes(lows: Points, highs: Points, lo: int, hi: int, n: int) -> Points:
    """Per bucket, the smallest point of `lows` and the largest of `highs` (finite only)."""
    kept = []
    for cands, sign in ((lows, 1.0), (highs, -1.0)):
        cands = cands.take(np.isfinite(cands.values))
        if len(cands):
            bucket = buckets_of(cands.steps, lo, hi, n)
            kept.append(cands.take(_first_per_group(bucket, np.lexsort((sign * cands.values, bucket)))))
    return concat(*kept) if kept else Points.empty()


def ordered_unique(points: Points) -> Points:
    """Sorted by step, with points selected twice (as min and as first, say) kept once."""
    order = np.lexsort((points.walls, points.steps))
    p = points.take(order)
    if len(p) < 2:
        return p
    same_value = (p.values[1:] == p.values[:-1]) | (np.isnan(p.values[1:]) & np.isnan(p.values[:-1]))
    dup = (p.steps[1:] == p.steps[:-1]) & (p.walls[1:] == p.walls[:-1]) & same_value
    return p.take(np.concatenate([[True], ~dup]))


def bucket_count(max_points: int) -> int:
    """Buckets for `max_points`: two points each, leaving room for the first and last."""
    return max(1, (max_points - 2) // 2)
