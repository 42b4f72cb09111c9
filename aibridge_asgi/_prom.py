"""Metric families kept in plain Python objects, read at scrape time.

prometheus_client's ``Counter.labels(...).inc()`` validates and takes a
lock on every update, and ``Histogram.observe`` walks its buckets in Python
under locks too: the bridge's per-request metrics cost more than the call
they measure. Here an update is an attribute add on a child found by one
dict lookup; the registry reads the values through :class:`Families` (a
prometheus_client collector) when it is scraped, and shows them exactly as
prometheus_client's own metrics would (same names, ``_total``, ``_bucket``,
``_sum``, ``_count``; no ``_created`` series).

Updates happen on the event loop's thread. A scrape from another thread
copies each family's children in one step (``list(dict.items())`` holds the
GIL throughout), so it sees every update made before it, or the child's
previous value: never a torn family.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _go_string

__all__ = ["CounterFamily", "Families", "GaugeFamily", "HistogramFamily"]


class _Value:
    """One labelled counter or gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Take ``amount`` away (gauges)."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Set the value (gauges)."""
        self.value = float(value)


class _Histogram:
    """One labelled histogram: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count one observation in the first bucket whose bound is >= it."""
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount


class _Family:
    """A metric name, its labels and its children by label values."""

    #: The prometheus_client family this one is shown as.
    _kind: type[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}

    def _new_child(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> Any:
        """The child for these label values (made on first use)."""
        key = values if not named and len(values) == len(self.labelnames) else None
        child = self._children.get(key) if key is not None else None
        if child is None:
            if named:
                values = tuple(str(named[name]) for name in self.labelnames)
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = self._new_child()
        return child

    def items(self) -> list[tuple[tuple[str, ...], Any]]:
        """The children, copied in one step."""
        return list(self._children.items())


class CounterFamily(_Family):
    """A counter with labels (``name`` without ``_total``; it is added)."""

    _kind: type[CounterMetricFamily | GaugeMetricFamily] = CounterMetricFamily

    def _new_child(self) -> _Value:
        return _Value()

    def labels(self, *values: str, **named: str) -> _Value:
        """The child for these label values (made on first use)."""
        child: _Value = super().labels(*values, **named)
        return child

    def metric(self) -> Metric:
        family = self._kind(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.items():
            family.add_metric(list(values), child.value)
        return family


class GaugeFamily(CounterFamily):
    """A gauge with labels."""

    _kind = GaugeMetricFamily


class HistogramFamily(_Family):
    """A histogram with labels and fixed bucket bounds."""

    _kind = HistogramMetricFamily

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._les: list[str] = [_go_string(b) for b in self.bounds]  # type: ignore[no-untyped-call]

    def _new_child(self) -> _Histogram:
        return _Histogram(self.bounds)

    def labels(self, *values: str, **named: str) -> _Histogram:
        """The child for these label values (made on first use)."""
        child: _Histogram = super().labels(*values, **named)
        return child

    def metric(self) -> Metric:
        family = self._kind(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.items():
            counts = list(child.counts)  # one copy: the buckets and +Inf agree
            running = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, counts, strict=False):
                running += count
                buckets.append((le, running))
            buckets.append(("+Inf", running + counts[-1]))
            family.add_metric(list(values), buckets, child.sum)
        return family


F = TypeVar("F", bound="CounterFamily | HistogramFamily")


class Families(Collector):
    """The collector that shows :class:`_Family` metrics to a registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._families: list[CounterFamily | HistogramFamily] = []
        self._registry = registry

    def add(self, family: F) -> F:
        """Show ``family`` too (call before :meth:`register`); returns it."""
        self._families.append(family)
        return family

    def register(self) -> None:
        """Register with the registry (which checks the names are free)."""
        self._registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.metric()

    def describe(self) -> Iterator[Metric]:
        for family in self._families:
            yield family._kind(family.name, family.documentation)
