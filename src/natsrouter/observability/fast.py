"""Lock-free counters and histograms for the per-message hot path, exposed as usual.

``prometheus_client``'s ``Counter.inc`` and ``Histogram.observe`` take a lock per call
(two for a histogram) and cost microseconds; on the publish path that alone costs a tenth or
more of raw nats-py's throughput. natsrouter updates these metrics only from the event loop
thread, so plain integers and floats are exact. ``FastCollector`` turns them into ordinary
counter and histogram families at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class FastCounter:
    """An unlabelled counter: ``value += 1`` on the hot path."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class FastLabelledCounter:
    """A counter with one label whose values are all known up front; a child per value."""

    def __init__(self, name: str, doc: str, label: str, values: Iterable[str]) -> None:
        self.name = name
        self.doc = doc
        self.label = label
        self.children = {v: FastCounter(name, doc) for v in values}

    def labels(self, value: str) -> FastCounter:
        return self.children[value]

    def metric(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, child in self.children.items():
            family.add_metric([value], child.value)
        return family


class FastHistogramChild:
    """One label value's buckets; ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "label_value", "sum")

    def __init__(self, label_value: str, bounds: Sequence[float]) -> None:
        self.label_value = label_value
        #: Upper bounds of the buckets, ascending (read by callers that inline ``observe``).
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastHistogram:
    """A histogram with one label whose values are all known up front."""

    def __init__(
        self, name: str, doc: str, label: str, values: Iterable[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.doc = doc
        self.label = label
        self.bounds = tuple(sorted(buckets))
        self.children = {v: FastHistogramChild(v, self.bounds) for v in values}

    def labels(self, value: str) -> FastHistogramChild:
        return self.children[value]

    def metric(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for child in self.children.values():
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), child.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric([child.label_value], buckets, child.sum)
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class FastCollector(Collector):
    def __init__(
        self,
        counters: Sequence[FastCounter | FastLabelledCounter],
        histograms: Sequence[FastHistogram],
    ) -> None:
        self._counters = counters
        self._histograms = histograms

    def collect(self) -> Iterator[Metric]:
        for c in self._counters:
            if isinstance(c, FastLabelledCounter):
                yield c.metric()
            else:
                yield CounterMetricFamily(c.name, c.doc, value=c.value)
        for h in self._histograms:
            yield h.metric()
