"""compare(): Mann-Whitney U and Hodges-Lehmann shift against scipy, R and a 1-D reference."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import detectors._arrays as arrays
from detectors import compare
from detectors.compare import _u_null_distribution

ALTERNATIVES = ["two-sided", "greater", "less"]


@cache
def u_counts(n: int, m: int) -> tuple[int, ...]:
    """Exact counts of arrangements with U = k: the Gaussian binomial [n+m choose n]."""
    size = n * m
    poly = [1] + [0] * size
    for i in range(1, n + 1):
        for k in range(size, m + i - 1, -1):
            poly[k] -= poly[k - m - i]
        for k in range(i, size + 1):
            poly[k] += poly[k - i]
    return tuple(poly)


def qwilcox(p: float, n: int, m: int) -> int:
    """R's qwilcox: the smallest q with P(U <= q) >= p (p nudged down by 10 eps, as R)."""
    counts = u_counts(n, m)
    total = sum(counts)
    target = Fraction(p - 10 * np.finfo(float).eps)
    cumulative = 0
    for q, count in enumerate(counts):
        cumulative += count
        if Fraction(cumulative, total) >= target:
            return q
    return len(counts) - 1


def reference(base, cand, confidence=0.95, alternative="two-sided"):
    """Plain 1-D implementation: scipy for the test, sorted differences for the interval."""
    b = base[~np.isnan(base)]
    c = cand[~np.isnan(cand)]
    n, m = len(b), len(c)
    if n == 0 or m == 0:
        return dict(
            statistic=np.nan,
            pvalue=np.nan,
            shift=np.nan,
            lower=np.nan,
            upper=np.nan,
            n_baseline=n,
            n_candidate=m,
        )
    pooled = np.concatenate([c, b])
    tied = len(np.unique(pooled)) < len(pooled)
    exact = n < 50 and m < 50 and not tied
    test = stats.mannwhitneyu(c, b, alternative=alternative, method="exact" if exact else "asymptotic")
    diffs = np.sort(np.subtract.outer(c, b).ravel())
    nm = n * m
    tail = (1 - confidence) / 2 if alternative == "two-sided" else 1 - confidence
    if exact:
        k = max(qwilcox(tail, n, m), 1)
    else:
        _, counts = np.unique(pooled, return_counts=True)
        ties = float(np.sum(counts**3 - counts))
        big_n = n + m
        sigma = math.sqrt(nm / 12 * ((big_n + 1) - ties / (big_n * (big_n - 1))))
        k = math.ceil(nm / 2 - stats.norm.ppf(1 - tail) * sigma - 0.5)
    top = (nm + 1) // 2 if alternative == "two-sided" else nm
    k = min(max(k, 1), max(top, 1))
    lower, upper = diffs[k - 1], diffs[nm - k]
    if alternative == "greater":
        upper = np.inf
    if alternative == "less":
        lower = -np.inf
    return dict(
        statistic=test.statistic,
        pvalue=test.pvalue,
        shift=np.median(diffs),
        lower=lower,
        upper=upper,
        n_baseline=n,
        n_candidate=m,
    )


def with_gaps(values: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Copy of a row with all but `keep` values (at random places) set to NaN."""
    out = np.full(values.shape, np.nan)
    where = rng.choice(values.size, size=keep, replace=False)
    out[where] = values[where]
    return out


def ragged_rows(n: int, m: int, draw, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with 0, 1, 2, n-2 and n valid values on each side, in several pairings."""
    rng = np.random.default_rng(seed)
    keeps_b = [0, 1, 2, n - 2, n, n, 1, n - 2, n, 2]
    keeps_c = [m, m, 1, m - 2, m, 0, 1, 2, m - 2, m]
    base = np.stack([with_gaps(draw(rng, n), k, rng) for k in keeps_b])
    cand = np.stack([with_gaps(draw(rng, m) + rng.uniform(-1, 3), k, rng) for k in keeps_c])
    return base, cand


def continuous(rng, size):
    return rng.normal(10.0, 2.0, size)


def integers(rng, size):
    return rng.integers(0, 6, size).astype(float)


def assert_matches_reference(base, cand, confidence, alternative):
    result = compare(base, cand, confidence=confidence, alternative=alternative)
    for row in range(base.shape[0]):
        expected = reference(base[row], cand[row], confidence, alternative)
        for field, value in expected.items():
            got = getattr(result, field)[row]
            np.testing.assert_allclose(got, value, rtol=1e-9, atol=1e-12, err_msg=f"row {row} field {field}")


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize(
    ("n", "m", "draw"),
    [
        (7, 9, continuous),
        (30, 24, continuous),
        (12, 10, integers),
        (60, 55, continuous),
        (49, 49, continuous),
        (80, 70, integers),
    ],
)
def test_rows_equal_the_1d_reference(n, m, draw, alternative):
    base, cand = ragged_rows(n, m, draw, seed=n * 1000 + m)
    assert_matches_reference(base, cand, 0.95, alternative)


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.99])
def test_other_confidence_levels_match_the_reference(confidence):
    base, cand = ragged_rows(15, 20, continuous, seed=5)
    base2, cand2 = ragged_rows(70, 65, continuous, seed=6)
    assert_matches_reference(base, cand, confidence, "two-sided")
    assert_matches_reference(base2, cand2, confidence, "greater")


def test_small_chunks_give_the_same_answer(monkeypatch):
    base, cand = ragged_rows(60, 55, integers, seed=11)
    whole = compare(base, cand)
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 500)
    chunked = compare(base, cand)
    for field in ("shift", "lower", "upper", "pvalue"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))


def test_r_wilcox_known_answer():
    # R: wilcox.test(c(10,20,30,40), c(1,2,3,4), conf.int=TRUE)
    result = compare([1.0, 2, 3, 4], [10.0, 20, 30, 40])
    assert result.shift == 22.5
    assert (result.lower, result.upper) == (6.0, 39.0)
    assert result.pvalue == pytest.approx(0.02857, abs=5e-6)
    assert result.statistic == 16.0
    assert np.ndim(result.pvalue) == 0 and int(result.n_baseline) == 4


def test_exact_distribution_matches_integer_counts():
    for n, m in [(1, 1), (3, 5), (8, 8), (20, 13)]:
        counts = np.array(u_counts(n, m), dtype=float)
        cdf, sf = _u_null_distribution(n, m)
        np.testing.assert_allclose(cdf, np.cumsum(counts) / counts.sum(), rtol=1e-12)
        np.testing.assert_allclose(sf, np.cumsum(counts[::-1])[::-1] / counts.sum(), rtol=1e-12)


def test_exact_tail_keeps_relative_precision():
    cdf, sf = _u_null_distribution(49, 49)
    assert sf[-1] == pytest.approx(1 / math.comb(98, 49), rel=1e-12)
    assert cdf[0] == pytest.approx(1 / math.comb(98, 49), rel=1e-12)


def test_normal_interval_rank_is_close_to_the_exact_one():
    # 40 vs 45 without ties is exact; its normal counterpart should land within one rank.
    rng = np.random.default_rng(3)
    base, cand = rng.normal(size=40), rng.normal(size=45) + 0.3
    diffs = np.sort(np.subtract.outer(cand, base).ravel())
    exact = compare(base, cand)
    k = qwilcox(0.025, 40, 45)
    assert exact.lower == diffs[k - 1]
    sigma = math.sqrt(40 * 45 * 86 / 12)
    k_normal = math.ceil(40 * 45 / 2 - stats.norm.ppf(0.975) * sigma - 0.5)
    assert abs(k_normal - k) <= 1


def test_large_rows_use_the_normal_approximation():
    rng = np.random.default_rng(8)
    base = rng.lognormal(3.0, 0.4, size=(3, 512))
    cand = rng.lognormal(3.0, 0.4, size=(3, 720)) * np.array([[1.0], [1.1], [0.9]])
    result = compare(base, cand, alternative="greater")
    for row in range(3):
        expected = stats.mannwhitneyu(cand[row], base[row], alternative="greater", method="asymptotic")
        assert result.pvalue[row] == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.pvalue[1] < 1e-6 < result.pvalue[2]
    assert result.lower[1] > 0


def test_deterministic():
    base, cand = ragged_rows(60, 55, integers, seed=12)
    first, second = compare(base, cand), compare(base, cand)
    np.testing.assert_array_equal(first.shift, second.shift)
    np.testing.assert_array_equal(first.pvalue, second.pvalue)


def test_empty_rows_are_nan_and_do_not_poison_others():
    base = np.array([[1.0, 2, 3], [np.nan] * 3])
    cand = np.array([[4.0, 5, np.nan], [1.0, 2, 3]])
    result = compare(base, cand)
    assert np.isnan(result.pvalue[1]) and np.isnan(result.shift[1])
    assert list(result.n_baseline) == [3, 0] and list(result.n_candidate) == [2, 3]
    assert np.isfinite(result.pvalue[0]) and result.shift[0] == 2.5


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"alternative": "bigger"}, "alternative"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.0}, "confidence"),
        ({"interval_below": 0.0}, "interval_below"),
        ({"interval_below": float("nan")}, "interval_below"),
    ],
)
def test_invalid_parameters_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        compare([1.0, 2.0], [3.0, 4.0], **kwargs)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same number of series"):
        compare(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="baseline"):
        compare(np.ones((2, 2, 2)), np.ones((2, 2)))


sample = st.lists(st.integers(-1000, 1000), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(sample)
def test_identical_candidate_has_no_shift(values):
    x = np.array(values, dtype=float)
    result = compare(x, x)
    assert result.shift == 0.0
    assert result.pvalue >= 0.99
    assert result.lower <= 0.0 <= result.upper


@settings(max_examples=60, deadline=None)
@given(sample, sample, st.floats(1e-3, 1e3), st.sampled_from(ALTERNATIVES))
def test_common_scaling_scales_the_shift_only(base, cand, factor, alternative):
    b, c = np.array(base, dtype=float), np.array(cand, dtype=float)
    plain = compare(b, c, alternative=alternative)
    scaled = compare(b * factor, c * factor, alternative=alternative)
    assert scaled.pvalue == plain.pvalue
    assert scaled.statistic == plain.statistic
    assert scaled.shift == pytest.approx(plain.shift * factor, rel=1e-9, abs=1e-9)
    assert scaled.lower == pytest.approx(plain.lower * factor, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(0, 30), st.integers(0, 30), st.floats(0.0, 1.0)
)
def test_nan_gaps_never_raise(seed, rows, n, m, gap):
    # Zero columns on a side too: the daemon judges before a release's first sample.
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 5, (rows, n)).astype(float)
    cand = rng.normal(size=(rows, m))
    base[rng.random(base.shape) < gap] = np.nan
    cand[rng.random(cand.shape) < gap] = np.nan
    result = compare(base, cand)
    usable = (result.n_baseline > 0) & (result.n_candidate > 0)
    assert result.pvalue.shape == (rows,)
    assert np.all(np.isfinite(result.shift[usable])) and np.all(np.isnan(result.shift[~usable]))
    assert np.all((result.pvalue[usable] >= 0) & (result.pvalue[usable] <= 1))
    assert np.all(result.lower[usable] <= result.upper[usable])


@pytest.mark.parametrize("module", ["compare", "rates", "changepoint", "leak"])
def test_docstring_examples_hold(module):
    import doctest
    import importlib

    found = doctest.testmod(importlib.import_module(f"detectors.{module}"), optionflags=doctest.ELLIPSIS)
    assert found.attempted > 0 and found.failed == 0


# ---------------------------------------------------------------- the large-sample path
# Above EXACT_PAIRS differences per row, U and the p-value stay exact (one integer sort per
# row) while the shift and interval come from atoms; these tests hold both to account.

LARGE_DRAWS = {
    "normal": lambda rng, size: rng.normal(10.0, 2.0, size),
    "lognormal": lambda rng, size: rng.lognormal(3.0, 0.8, size),
    "exponential": lambda rng, size: rng.exponential(5.0, size),
    "bimodal": lambda rng, size: np.where(
        rng.random(size) < 0.3, rng.normal(5, 1, size), rng.normal(0, 1, size)
    ),
    "cauchy": lambda rng, size: rng.standard_cauchy(size),
}


def large_rows(draw, rows: int, seed: int, n: int = 512, m: int = 720) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and candidate rows of the judge's sizes, each candidate shifted a little."""
    rng = np.random.default_rng(seed)
    base = np.stack([draw(rng, n) for _ in range(rows)])
    cand = np.stack([draw(rng, m) + rng.uniform(-0.3, 0.3) for _ in range(rows)])
    return base, cand


def errors_in_widths(base, cand, alternative="two-sided"):
    """|approximate - exact| / exact interval width for shift, lower and upper, per row."""
    result = compare(base, cand, alternative=alternative)
    errors = []
    for row in range(base.shape[0]):
        exact = reference(base[row], cand[row], 0.95, "two-sided")
        width = exact["upper"] - exact["lower"]
        errors.append([abs(getattr(result, f)[row] - exact[f]) / width for f in ("shift", "lower", "upper")])
    return np.array(errors)


@pytest.mark.parametrize("name", sorted(LARGE_DRAWS))
def test_large_rows_shift_and_interval_are_within_a_few_percent_of_the_width(name):
    base, cand = large_rows(LARGE_DRAWS[name], rows=4, seed=len(name))
    errors = errors_in_widths(base, cand)
    # Measured on 30 rows of each law: at most 3.1% of the width, 0.7% on average.
    assert errors.max() < 0.035, errors
    assert errors.mean() < 0.015, errors


@pytest.mark.parametrize(("draw", "grid"), [
    (lambda rng, size: np.round(rng.lognormal(4.0, 0.5, size)), 1.0),
    (lambda rng, size: np.round(rng.normal(1000.0, 300.0, size)), 1.0),
    (lambda rng, size: np.round(rng.normal(10.0, 3.0, size), 1), 0.1),
], ids=["rounded-lognormal", "rounded-wide-normal", "tenths"])
def test_large_rows_on_a_grid_are_within_two_grid_steps(draw, grid):
    # More distinct values than atoms, all on a grid: the exact ends are grid points.
    rng = np.random.default_rng(5)
    base, cand = draw(rng, (4, 512)), draw(rng, (4, 720)) + grid * np.array([[0], [3], [-2], [1]])
    result = compare(base, cand)
    for row in range(4):
        exact = reference(base[row], cand[row], 0.95, "two-sided")
        for field in ("shift", "lower", "upper"):
            assert abs(getattr(result, field)[row] - exact[field]) <= 2 * grid + 1e-9, (row, field)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_large_rows_keep_the_exact_u_and_p_value(alternative):
    rng = np.random.default_rng(21)
    base = rng.lognormal(3.0, 0.4, size=(4, 512))
    cand = rng.lognormal(3.0, 0.4, size=(4, 720)) * np.array([[1.0], [1.05], [0.97], [1.0]])
    base[1, ::3] = np.round(base[1, ::3])  # some ties, within and between samples
    cand[1, ::4] = np.round(cand[1, ::4])
    base[2, 400:] = np.nan  # gaps: other counts in the same call
    cand[3, :100] = np.nan
    result = compare(base, cand, alternative=alternative)
    for row in range(4):
        b, c = base[row][~np.isnan(base[row])], cand[row][~np.isnan(cand[row])]
        expected = stats.mannwhitneyu(c, b, alternative=alternative, method="asymptotic")
        assert result.statistic[row] == expected.statistic
        assert result.pvalue[row] == pytest.approx(expected.pvalue, rel=1e-9)


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_large_rows_with_both_signs_keep_the_exact_u(scale):
    # Values in [-1, 1] leave room for the sample flag in the key; +-1e6 do not and take
    # the argsort path. Both must give scipy's U.
    rng = np.random.default_rng(4)
    base = rng.uniform(-1, 1, size=(2, 300)) * scale
    cand = rng.uniform(-1, 1, size=(2, 400)) * scale + 0.1 * scale
    base[0, :10] = -0.0
    cand[0, :10] = 0.0  # -0.0 and 0.0 are equal values: ties, not an order
    result = compare(base, cand)
    for row in range(2):
        expected = stats.mannwhitneyu(cand[row], base[row], method="asymptotic")
        assert result.statistic[row] == expected.statistic
        assert result.pvalue[row] == pytest.approx(expected.pvalue, rel=1e-9)


@pytest.mark.parametrize("scale", [1e-300, 1e-44, 1e40, 1e300])
def test_large_rows_at_any_scale_are_the_unit_scales_results_scaled(scale):
    # The atoms' differences are sorted in float32: values beyond its range must neither
    # overflow to inf nor vanish below its smallest numbers.
    rng = np.random.default_rng(5)
    base, cand = rng.normal(0.0, 1.0, 512), rng.normal(0.3, 1.0, 720)
    unit = compare(base, cand)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = compare(base * scale, cand * scale)
    for field in ("shift", "lower", "upper"):
        assert float(getattr(scaled, field)) / scale == pytest.approx(float(getattr(unit, field)), rel=1e-6)


def test_large_rows_of_few_distinct_values_are_exact():
    # Counts such as pool slots in use take a handful of values: their atoms are the
    # distinct values weighted by multiplicity, and the answer is the exact one.
    rng = np.random.default_rng(9)
    base = rng.integers(0, 30, size=(3, 512)).astype(float)
    cand = rng.integers(1, 32, size=(3, 720)).astype(float)
    cand[2, :300] = np.nan  # an even count of differences: the shift is a mean of two
    base[2, :1] = np.nan
    assert_matches_reference(base, cand, 0.95, "two-sided")
    assert_matches_reference(base, cand, 0.9, "greater")


def test_the_exact_path_ends_at_exact_pairs():
    from detectors.compare import EXACT_PAIRS

    rng = np.random.default_rng(17)
    at_limit = rng.normal(size=(2, 256)), rng.normal(size=(2, 256)) + 0.2
    assert 256 * 256 == EXACT_PAIRS
    assert_matches_reference(*at_limit, 0.95, "two-sided")
    above = rng.normal(size=(2, 257)), rng.normal(size=(2, 256)) + 0.2
    errors = errors_in_widths(*above)
    assert 0 < errors.max() < 0.05


def test_a_small_baseline_against_a_long_candidate_is_its_own_atoms():
    rng = np.random.default_rng(23)
    base, cand = rng.normal(size=(3, 60)), rng.normal(size=(3, 1500)) + 0.5
    errors = errors_in_widths(base, cand)
    assert errors.max() < 0.035


def test_large_rows_one_sided_intervals_are_open_on_the_harmless_side():
    base, cand = large_rows(LARGE_DRAWS["normal"], rows=2, seed=31)
    greater = compare(base, cand, alternative="greater")
    less = compare(base, cand, alternative="less")
    assert np.all(np.isinf(greater.upper)) and np.all(np.isinf(less.lower))
    two = compare(base, cand)
    np.testing.assert_array_equal(greater.shift, two.shift)
    assert np.all((greater.lower > two.lower) & (greater.lower < two.shift))


def test_large_rows_do_not_depend_on_their_neighbours_threads_or_chunks(monkeypatch):
    rng = np.random.default_rng(41)
    base = rng.lognormal(2.0, 0.5, size=(12, 512))
    cand = rng.lognormal(2.0, 0.5, size=(12, 720))
    base[3, 200:] = np.nan
    cand[5, 500:] = np.nan
    base[7] = np.round(base[7])  # one discrete row among continuous ones
    cand[7] = np.round(cand[7])
    monkeypatch.setattr(arrays, "WORKERS", 2)
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 3000)  # chunks of a row or two, on two threads
    whole = compare(base, cand)
    monkeypatch.setattr(arrays, "WORKERS", 1)
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 1 << 18)
    alone = [compare(base[row], cand[row]) for row in range(12)]
    for field in ("statistic", "pvalue", "shift", "lower", "upper"):
        np.testing.assert_array_equal(getattr(whole, field), [getattr(a, field) for a in alone])


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_interval_below_skips_only_the_rows_at_or_above_it(alternative):
    rng = np.random.default_rng(43)
    base = rng.normal(0.0, 1.0, size=(30, 512))
    cand = rng.normal(0.0, 1.0, size=(30, 720)) + np.linspace(-0.3, 0.3, 30)[:, None]
    small_base, small_cand = base[:, :40], cand[:, :30]  # the exact path too
    for b, c in ((base, cand), (small_base, small_cand)):
        full = compare(b, c, alternative=alternative)
        part = compare(b, c, alternative=alternative, interval_below=0.01)
        kept = full.pvalue < 0.01
        assert 0 < kept.sum() < len(kept)
        for field in ("statistic", "pvalue", "n_baseline", "n_candidate"):
            np.testing.assert_array_equal(getattr(part, field), getattr(full, field))
        for field in ("shift", "lower", "upper"):
            np.testing.assert_array_equal(getattr(part, field)[kept], getattr(full, field)[kept])
            assert np.all(np.isnan(getattr(part, field)[~kept]))


def test_order_keys_sort_as_the_floats_do():
    from detectors.compare import _order_keys

    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(size=200) * 10.0 ** rng.integers(-300, 300, size=200),
                             [0.0, -1e-310, 1e-310, np.finfo(float).max, -np.finfo(float).max]])
    keys = _order_keys(values, np.empty(values.size, dtype=np.uint64))
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.argsort(values, kind="stable"))
