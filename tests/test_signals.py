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


def test_an_empty_label_value_matches_series_without_the_label() -> None:
    # As in PromQL: req_total{canary=""} is the series that carry no canary label.
    raw = _raw(['req_total{code="500"}', 'req_total{canary="yes",code="500"}'],
               [[0, 150], [0, 15]], [0, 15])
    frame = derive([SignalRule("main", kind="rate", metric='req_total{canary=""}')], raw)
    assert frame.values[0, 1] == pytest.approx(10.0)


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


def _pods(keys: list[str], per_pod: dict[str, list[list[float]]]) -> RawSeries:
    """Pods scraped at 0 s and 15 s, one block of rows (keys x 2 scrapes) each."""
    pods = sorted(per_pod)
    times = np.array([0.0] * len(pods) + [15.0] * len(pods))
    values = np.hstack([np.array(per_pod[p], float)[:, [0]] for p in pods]
                       + [np.array(per_pod[p], float)[:, [1]] for p in pods])
    return RawSeries(tuple(keys), times, tuple(pods * 2), values)


def test_a_pod_without_an_error_series_yet_counts_its_requests_with_zero_errors() -> None:
    # prometheus_client makes `code="500"` only at the first error: pods b and c served
    # 1000 requests each without one. The ratio is 10 in 3010, not 10 in 1010.
    keys = ['req_total{code="200"}', 'req_total{code="500"}']
    raw = _pods(keys, {"a": [[0, 1000], [0, 10]],
                       "b": [[0, 1000], [np.nan, np.nan]],
                       "c": [[0, 1000], [np.nan, np.nan]]})
    rule = SignalRule("errors", kind="ratio", numerator='req_total{code="500"}',
                      denominator="req_total")
    frame = derive([rule], raw)
    assert (frame.events[0, 1], frame.trials[0, 1]) == (10.0, 3010.0)
    assert frame.values[0, 1] == pytest.approx(10 / 3010)
    # A release with no error at all has a ratio of zero, not no ratio.
    clean = _pods(keys, {"a": [[0, 1000], [np.nan, np.nan]]})
    assert derive([rule], clean).values[0, 1] == 0.0
    # A numerator whose metric name nothing has (a typo) stays without samples.
    typo = SignalRule("errors", kind="ratio", numerator='reqs_total{code="500"}',
                      denominator="req_total")
    assert np.isnan(derive([typo], raw).values[0, 1])


def test_a_labelled_child_that_appears_counts_its_first_value_as_increase() -> None:
    # A fresh pod: `code="500"` is created by its first errors (3 of them) between the
    # second and third scrapes, then counts 2 more. Requests: 100 per interval, the 500s
    # among them. A child there from the first scrape on says nothing of what it counted
    # before it (the first interval stays unknown, as Prometheus's increase() has it).
    keys = ['req_total{code="200"}', 'req_total{code="500"}']
    raw = _raw(keys, [[0, 100, 197, 295], [np.nan, np.nan, 3, 5]], [0, 15, 30, 45])
    rule = SignalRule("errors", kind="ratio", numerator='req_total{code="500"}',
                      denominator="req_total")
    frame = derive([rule], raw)
    np.testing.assert_allclose(frame.events[0], [np.nan, 0, 3, 2])
    np.testing.assert_allclose(frame.trials[0], [np.nan, 100, 100, 100])
    # A child that vanishes for a scrape and comes back is not counted from zero again
    # (9 errors at once): its interval has none known, the next its 1.
    flaky = _raw(keys, [[0, 100, 200, 300], [7, np.nan, 9, 10]], [0, 15, 30, 45])
    np.testing.assert_allclose(derive([rule], flaky).events[0], [np.nan, 0, 0, 1])


def test_a_quantile_over_pods_pools_their_buckets_as_histogram_quantile_of_the_sum() -> None:
    # Pod a: 1000 requests within 50 ms. Pod b: 10 requests of 1-10 s. Pooled, the rank
    # 0.95 x 1010 = 959.5 falls in (0, 0.05]: 0.05 x 959.5 / 1000, what
    # histogram_quantile(0.95, sum by (le) (increase(...))) answers. A mean of the pods'
    # p95s would say 4.8 s.
    keys = [f'lat_bucket{{le="{b}"}}' for b in ("0.05", "1", "10", "+Inf")]
    raw = _pods(keys, {"a": [[0, 1000], [0, 1000], [0, 1000], [0, 1000]],
                       "b": [[0, 0], [0, 0], [0, 10], [0, 10]]})
    pooled = derive([SignalRule("p95", kind="quantile", metric="lat", quantile=0.95)], raw)
    assert pooled.values[0, 1] == pytest.approx(0.05 * 959.5 / 1000)
    # "max" asks for the worst pod's own p95: b's, 1 + 9 x 9.5 / 10.
    worst = derive([SignalRule("p95", kind="quantile", metric="lat", quantile=0.95,
                               aggregate="max")], raw)
    assert worst.values[0, 1] == pytest.approx(1 + 9 * 9.5 / 10)


def test_a_bucket_another_release_exported_does_not_empty_the_quantile() -> None:
    # The service's series list holds `le="0.25"`, which only the next release exports:
    # this window has no value of it, and its quantile comes from the buckets it has.
    # 100 requests: 80 within 0.1 s, 20 more within 0.5 s; rank 95 falls in (0.1, 0.5]:
    # 0.1 + 0.4 x 15 / 20.
    keys = [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "0.25", "0.5", "+Inf")]
    raw = _pods(keys, {"a": [[0, 80], [np.nan, np.nan], [0, 100], [0, 100]]})
    for aggregate in ("sum", "max"):
        rule = SignalRule("p95", kind="quantile", metric="lat", quantile=0.95, aggregate=aggregate)
        frame = derive([rule], raw)
        assert frame.values[0, 1] == pytest.approx(0.1 + 0.4 * 15 / 20)
        assert frame.layouts == {"p95": (0.1, 0.5, np.inf)}   # what it was taken over
    # Pooled over pods of two layouts, only the bounds both export are added up: 160 of
    # 200 within 0.1 s, rank 190 in (0.1, 0.5].
    mixed = _pods(keys, {"a": [[0, 80], [np.nan, np.nan], [0, 100], [0, 100]],
                         "b": [[0, 80], [0, 90], [0, 100], [0, 100]]})
    pooled = derive([SignalRule("p95", kind="quantile", metric="lat", quantile=0.95)], mixed)
    assert pooled.values[0, 1] == pytest.approx(0.1 + 0.4 * 30 / 40)


def test_a_quantile_within_coarser_bounds_is_taken_as_over_those_alone() -> None:
    # A release that added le="0.25": over the old bounds (0.1, 0.5, +Inf) its p95 is
    # estimated as the baseline's was, 0.1 + 0.4 x 15 / 20, not 0.25 + 0.25 x 5 / 10.
    keys = [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "0.25", "0.5", "+Inf")]
    raw = _pods(keys, {"a": [[0, 80], [0, 90], [0, 100], [0, 100]]})
    for aggregate in ("sum", "max"):
        rule = SignalRule("p95", kind="quantile", metric="lat", quantile=0.95, aggregate=aggregate)
        finest = derive([rule], raw)
        assert finest.values[0, 1] == pytest.approx(0.25 + 0.25 * 5 / 10)
        old = {"p95": (0.1, 0.5, np.inf)}
        coarse = derive([rule], raw, within=old)
        assert coarse.values[0, 1] == pytest.approx(0.1 + 0.4 * 15 / 20)
        assert coarse.layouts == old
        # Bounds the candidate dropped, the same bounds, or a merge of two layouts (NaN):
        # nothing to take within.
        for before in ((0.1, 0.2, 0.5, np.inf), (0.1, 0.25, 0.5, np.inf), (np.nan,)):
            kept = derive([rule], raw, within={"p95": before})
            assert kept.layouts == finest.layouts
            np.testing.assert_array_equal(kept.values, finest.values)


def test_a_rate_across_targets_is_added_up_or_averaged_as_asked() -> None:
    raw = _pods(["req_total"], {"a": [[0, 150]], "b": [[0, 300]]})
    added = derive([SignalRule("rate", kind="rate", metric="req_total")], raw)
    per_pod = derive([SignalRule("rate", kind="rate", metric="req_total", aggregate="mean")], raw)
    assert (added.values[0, 1], per_pod.values[0, 1]) == (30.0, 15.0)


def test_an_infinite_gauge_is_a_missing_sample() -> None:
    raw = _raw(["ratio"], [[0.5, np.inf, -np.inf, 0.7]], [0, 15, 30, 45])
    frame = derive([SignalRule("ratio", metric="ratio")], raw)
    np.testing.assert_array_equal(frame.values[0], [0.5, np.nan, np.nan, 0.7])


def test_a_worst_pod_quantile_with_pods_scraped_unevenly_and_no_layout_without_data() -> None:
    # Pod a scraped three times, pod b twice: each target's own p95, the worst per slot.
    keys = tuple(f'lat_bucket{{le="{b}"}}' for b in ("0.1", "1", "+Inf"))
    a = [[0, 100, 200], [0, 100, 200], [0, 100, 200]]          # all within 0.1 s
    b = [[0, 0], [0, 10], [0, 10]]                               # all within (0.1, 1]
    values = np.hstack([np.array(a, float), np.array(b, float)])
    raw = RawSeries(keys, np.array([0.0, 15.0, 30.0, 1.0, 16.0]), ("a", "a", "a", "b", "b"), values)
    worst = derive([SignalRule("p95", kind="quantile", metric="lat", quantile=0.95,
                               aggregate="max")], raw)
    np.testing.assert_allclose(worst.values[0], [np.nan, 0.1 + 0.9 * 9.5 / 10, 0.1 * 95 / 100])
    assert worst.layouts == {"p95": (0.1, 1.0, np.inf)}
    # Targets of different buckets: no one layout the worst quantile was taken in.
    mixed = RawSeries(tuple(f'lat_bucket{{le="{b}"}}' for b in ("0.1", "0.5", "1", "+Inf")),
                      np.array([0.0, 15.0, 1.0, 16.0]), ("a", "a", "b", "b"),
                      np.array([[0, 10, np.nan, np.nan], [np.nan, np.nan, 0, 10],
                                [0, 10, 0, 10], [0, 10, 0, 10]], dtype=float))
    [layout] = derive([SignalRule("p95", kind="quantile", metric="lat",
                                  aggregate="max")], mixed).layouts.values()
    assert len(layout) == 1 and np.isnan(layout[0])
    # No target with a histogram in the window: no layout either (not every bound ever seen).
    empty = RawSeries(keys, np.array([0.0, 15.0]), ("a", "a"), np.full((3, 2), np.nan))
    assert derive([SignalRule("p95", kind="quantile", metric="lat")], empty).layouts == {"p95": ()}
