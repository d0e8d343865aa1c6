"""Raw scraped series -> signals, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.policy import SignalRule
from monitor.signals import RawSeries, bucket_quantile, derive


def _raw(keys: list[str], rows: list[list[float]], times: list[float], target: str = "t") -> RawSeries:
    return RawSeries(tuple(keys), np.array(times, float), (target,) * len(times), np.array(rows, float))


def test_rate_is_counter_increase_per_second_across_series_and_resets() -> None:
    raw = _raw(
        ['req_total{code="200"}', 'req_total{code="500"}'],
        [[0, 150, 300, 30], [0, 15, 30, 3]],
        [0, 15, 30, 45],
    )
    frame = derive([SignalRule("rate", kind="rate", metric="req_total")], raw)
    # 165 requests in 15 s, then 165, then a restart: the counters start again at 33.
    np.testing.assert_allclose(frame.values[0], [np.nan, 11.0, 11.0, 33 / 15])


def test_selector_labels_narrow_the_series() -> None:
    raw = _raw(['req_total{code="200"}', 'req_total{code="500"}'], [[0, 150], [0, 15]], [0, 15])
    frame = derive([SignalRule("errors", kind="rate", metric='req_total{code="500"}')], raw)
    assert frame.values[0, 1] == pytest.approx(1.0)


def test_ratio_keeps_counts_for_the_rate_test() -> None:
    raw = _raw(["err_total", "req_total"], [[0, 2, 10], [0, 100, 300]], [0, 15, 30])
    rule = SignalRule("error_ratio", kind="ratio", numerator="err_total", denominator="req_total")
    frame = derive([rule], raw)
    np.testing.assert_allclose(frame.events[0], [np.nan, 2, 8])
    np.testing.assert_allclose(frame.trials[0], [np.nan, 100, 200])
    np.testing.assert_allclose(frame.values[0], [np.nan, 0.02, 0.04])


def test_gauges_average_or_take_the_max_as_asked() -> None:
    raw = _raw(['mem{pod="a"}', 'mem{pod="b"}'], [[1, 3], [5, np.nan]], [0, 15])
    mean = derive([SignalRule("m", kind="gauge", metric="mem", aggregate="mean")], raw)
    top = derive([SignalRule("m", kind="gauge", metric="mem", aggregate="max")], raw)
    np.testing.assert_allclose(mean.values[0], [3, 3])
    np.testing.assert_allclose(top.values[0], [5, 3])


def test_two_targets_add_up_on_a_shared_grid() -> None:
    times = np.array([0.0, 1.0, 15.0, 16.0, 30.0, 31.0])
    raw = RawSeries(("req_total",), times, ("a", "b", "a", "b", "a", "b"),
                    np.array([[0, 0, 150, 300, 300, 600]], float))
    frame = derive([SignalRule("rate", kind="rate", metric="req_total")], raw)
    assert frame.times.size == 3
    np.testing.assert_allclose(frame.values[0, 1:], [30.0, 30.0])


def test_bucket_quantile_matches_prometheus_histogram_quantile() -> None:
    # 100 observations: 50 <= 0.1, 90 <= 0.5, 100 <= 1; p95 falls in (0.5, 1]:
    # 0.5 + (95 - 90) / (100 - 90) * 0.5 = 0.75, as histogram_quantile(0.95, ...) answers.
    bounds = np.array([0.1, 0.5, 1.0, np.inf])
    cumulative = np.array([[50.0], [90.0], [100.0], [100.0]])
    assert bucket_quantile(0.95, bounds, cumulative)[0] == pytest.approx(0.75)
    assert bucket_quantile(0.5, bounds, cumulative)[0] == pytest.approx(0.1)
    # A rank in the +Inf bucket answers the highest finite bound.
    spill = np.array([[0.0], [0.0], [10.0], [20.0]])
    assert bucket_quantile(0.9, bounds, spill)[0] == pytest.approx(1.0)


def test_quantile_signal_from_histogram_series() -> None:
    keys = [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "0.5", "1", "+Inf")]
    raw = _raw(keys, [[0, 50], [0, 90], [0, 100], [0, 100]], [0, 15])
    frame = derive([SignalRule("p95", kind="quantile", metric="lat", quantile=0.95)], raw)
    assert frame.values[0, 1] == pytest.approx(0.75)


def test_missing_series_give_nan_not_errors() -> None:
    raw = _raw(["other"], [[1, 2]], [0, 15])
    rules = [SignalRule("g", kind="gauge", metric="absent"),
             SignalRule("r", kind="ratio", numerator="a_total", denominator="b_total"),
             SignalRule("q", kind="quantile", metric="absent")]
    frame = derive(rules, raw)
    assert np.isnan(frame.values).all()


def test_a_target_with_two_scrapes_in_one_slot_counts_once() -> None:
    # Target a scrapes early, then late: 14 s and 21 s share the slot around 15 s, and it
    # has nothing in the slot around 30 s.
    times = np.array([0.0, 0.0, 14.0, 15.0, 21.0, 30.0, 45.0, 45.0, 60.0, 60.0, 75.0, 75.0])
    targets = ("a", "b", "a", "b", "a", "b") + ("a", "b") * 3
    gauge = np.array([[10, 20, 10, 20, 12, 20] + [10, 20] * 3], float)
    frame = derive([SignalRule("queue", metric="queue", aggregate="sum")],
                   RawSeries(("queue",), times, targets, gauge))
    np.testing.assert_allclose(frame.times, [0.0, 15.0, 30.0, 45.0, 60.0, 75.0])
    # Around 15 s: a's 10 and 12 averaged, plus b's 20; around 30 s a keeps its 11.
    np.testing.assert_allclose(frame.values[0], [30.0, 31.0, 31.0, 30.0, 30.0, 30.0])
