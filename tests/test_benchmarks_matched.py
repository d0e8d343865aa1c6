"""The matched-false-alarm comparison: each peer's sweep against the product's operating point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import matched
from benchmarks.accuracy import PRODUCT
from benchmarks.matched import CaseMarks, Point

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def marks(null: bool, major: bool, product: bool, peer: tuple[bool, bool]) -> CaseMarks:
    return CaseMarks(null, major, False, {PRODUCT: (product,), "pelt": peer})


def test_points_count_false_alarms_on_nulls_and_catches_on_majors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(matched.SWEEPS, "pelt", ({"penalty": 2.0}, {"penalty": 64.0}))
    rows = [
        marks(True, False, False, (True, False)), marks(True, False, False, (True, False)),
        marks(True, False, True, (False, False)), marks(True, False, False, (True, True)),
        marks(False, True, True, (True, True)), marks(False, True, True, (True, False)),
        marks(False, True, False, (True, False)), marks(False, False, True, (True, True)),
    ]
    [product] = matched.points(rows, PRODUCT)
    assert (product.false_alarms, product.majors) == (0.25, 2 / 3)
    loose, strict = matched.points(rows, "pelt")
    assert (loose.false_alarms, loose.majors) == (0.75, 1.0)
    assert (strict.false_alarms, strict.majors) == (0.25, 1 / 3)


def test_matched_reads_the_peer_curve_at_the_products_false_alarms() -> None:
    product = Point({}, 0.04, 0.5, 0.3)
    curve = [Point({"p": 1}, 0.30, 0.8, 0.6), Point({"p": 2}, 0.10, 0.55, 0.4),
             Point({"p": 3}, 0.03, 0.35, 0.2), Point({"p": 4}, 0.01, 0.2, 0.1)]
    answer = matched.matched(product, curve)
    assert answer["majors_at_product_false_alarms"] == 0.35
    assert answer["setting_at_product_false_alarms"] == {"p": 3}
    assert answer["false_alarms_for_product_majors"] == 0.10
    assert answer["beaten"]
    # A peer that catches as much at fewer false alarms is not beaten.
    better = [*curve, Point({"p": 5}, 0.02, 0.6, 0.3)]
    assert not matched.matched(product, better)["beaten"]
    # A peer that never gets down to the product's false alarms catches nothing there.
    assert matched.matched(product, curve[:2])["majors_at_product_false_alarms"] == 0.0


def test_quick_run_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    if not DATA.is_dir():
        pytest.skip(f"the labelled data sets are not at {DATA}")
    assert matched.main(["--data", str(DATA), "--quick", "--jobs", "1", "--datasets", "tcpd",
                         "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["peers"]) == set(matched.SWEEPS)
    for name, peer in report["peers"].items():
        assert len(peer["curve"]) == len(matched.SWEEPS[name])
        rates = [p["false_alarms"] for p in peer["curve"]]
        assert all(0.0 <= r <= 1.0 for r in rates)
