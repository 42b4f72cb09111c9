"""The bridge's own metric families (aibridge_asgi._prom) show what
prometheus_client's Counter, Gauge and Histogram would show for the same
updates: same exposition, line for line, but the ``_created`` series."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aibridge_asgi._prom import CounterFamily, Families, GaugeFamily, HistogramFamily

BUCKETS = (0.005, 0.01, 0.1, 1, 2.5, 10)
LABELS = st.sampled_from([("a", "x"), ("b", "x"), ("a", 'q"uote\\'), ("é", "\n")])
UPDATES = st.lists(
    st.tuples(
        st.sampled_from(["counter", "gauge_inc", "gauge_dec", "gauge_set", "histogram"]),
        LABELS,
        st.one_of(
            st.sampled_from([0.0, 0.005, 0.01, 1.0, 10.0, 10.5]),
            st.floats(0, 1e6, allow_nan=False),
        ),
    ),
    max_size=40,
)


def exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@settings(max_examples=200, deadline=None)
@given(UPDATES)
def test_exposition_matches_prometheus_client(
    updates: list[tuple[str, tuple[str, str], float]],
) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    names = ("provider", "model")
    counter = Counter("t_requests_total", "Requests.", names, registry=theirs)
    gauge = Gauge("t_in_flight", "In flight.", names, registry=theirs)
    histogram = Histogram("t_seconds", "Seconds.", names, buckets=BUCKETS, registry=theirs)
    families = Families(ours)
    my_counter = CounterFamily("t_requests", "Requests.", names)
    my_gauge = GaugeFamily("t_in_flight", "In flight.", names)
    my_histogram = HistogramFamily("t_seconds", "Seconds.", names, BUCKETS)
    for family in (my_counter, my_gauge, my_histogram):
        families.add(family)
    families.register()
    # Each update made the same way on both: (their metric, ours, method).
    pairs = {
        "counter": (counter, my_counter, "inc"),
        "gauge_inc": (gauge, my_gauge, "inc"),
        "gauge_dec": (gauge, my_gauge, "dec"),
        "gauge_set": (gauge, my_gauge, "set"),
        "histogram": (histogram, my_histogram, "observe"),
    }
    for kind, labels, amount in updates:
        their_metric, our_metric, method = pairs[kind]
        getattr(their_metric.labels(*labels), method)(amount)
        getattr(our_metric.labels(*labels), method)(amount)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("t_requests_total", {"provider": "zz", "model": "zz"}) is None


def test_labels_by_name_and_wrong_counts() -> None:
    family = CounterFamily("t_calls", "Calls.", ("provider", "model"))
    family.labels(model="m", provider="p").inc(2)
    family.labels("p", "m").inc()
    assert [(values, child.value) for values, child in family.items()] == [(("p", "m"), 3.0)]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("p")
    with pytest.raises(KeyError):
        family.labels(provider="p")


def test_a_name_taken_twice_is_refused() -> None:
    registry = CollectorRegistry()
    Counter("t_dup_total", "Taken.", registry=registry)
    families = Families(registry)
    families.add(CounterFamily("t_dup", "Again.", ()))
    with pytest.raises(ValueError, match="Duplicated"):
        families.register()


def test_scraping_from_another_thread_while_updating() -> None:
    """A scrape during updates from the loop's thread never fails and never
    shows a histogram whose buckets disagree with its count."""
    registry = CollectorRegistry()
    families = Families(registry)
    histogram = HistogramFamily("t_busy_seconds", "Busy.", ("n",), BUCKETS)
    families.add(histogram)
    families.register()
    stop = threading.Event()
    failures: list[BaseException] = []

    def scrape() -> None:
        while not stop.is_set():
            try:
                for metric in registry.collect():
                    samples = {
                        (s.name, s.labels.get("n"), s.labels.get("le")): s.value
                        for s in metric.samples
                    }
                    for (name, n, le), value in samples.items():
                        if name.endswith("_bucket") and le == "+Inf":
                            assert value == samples[("t_busy_seconds_count", n, None)]
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(20_000):
            histogram.labels(str(i % 50)).observe(i % 7)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert registry.get_sample_value("t_busy_seconds_count", {"n": "3"}) == 400
