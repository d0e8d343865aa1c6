"""`monitor demo` end to end: real HTTP, SQLite, baselines, detectors and judge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.demo import PERIOD, run_demo


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    lines: list[str] = []
    result = run_demo(path, echo=lines.append)
    assert len(lines) == 5
    return {doc["release"]: doc for doc in result}


def _signals(doc: dict[str, Any], severity: str | None = None) -> set[str]:
    return {f["signal"] for f in doc["findings"] if severity in (None, f["severity"])}


def test_healthy_releases_pass_at_the_end_of_their_period(docs: dict[str, dict[str, Any]]) -> None:
    assert docs["v2.1"]["verdict"] == "pass" and docs["v2.1"]["baseline_release"] is None
    v22 = docs["v2.2"]
    assert v22["verdict"] == "pass" and v22["baseline_release"] == "v2.1"
    assert v22["decided_at"] - v22["started_at"] == pytest.approx(PERIOD, abs=60)
    assert v22["findings"] == []


def test_error_jump_and_fast_leak_roll_back_with_both_reasons(docs: dict[str, dict[str, Any]]) -> None:
    v23 = docs["v2.3"]
    assert v23["verdict"] == "rollback" and v23["baseline_release"] == "v2.2"
    assert {"error_ratio", "memory"} <= _signals(v23, "major")
    assert "error_ratio" in v23["reason"] and "memory" in v23["reason"]
    assert v23["decided_at"] - v23["started_at"] < 600
    assert v23["first_alarm_at"] == v23["decided_at"]


def test_minor_regression_asks_for_a_hotfix(docs: dict[str, dict[str, Any]]) -> None:
    v24 = docs["v2.4"]
    assert v24["verdict"] == "hotfix"
    assert v24["baseline_release"] == "v2.2"  # the rolled-back v2.3 is never a baseline
    assert "queue_depth" in _signals(v24, "minor")
    assert not _signals(v24, "major")


def test_failed_smoke_rolls_back_before_any_signal_is_judged(docs: dict[str, dict[str, Any]]) -> None:
    v25 = docs["v2.5"]
    assert v25["verdict"] == "rollback"
    assert v25["reason"].startswith("smoke failed")
    assert {f["detector"] for f in v25["findings"]} == {"smoke"}
    assert v25["decided_at"] == v25["started_at"] or v25["decided_at"] - v25["started_at"] < 30
    assert not any(c["stage"] == "verification" for c in v25["checks"])


def test_healthy_releases_ran_smoke_and_verification(docs: dict[str, dict[str, Any]]) -> None:
    stages = {(c["stage"], c["ok"]) for c in docs["v2.2"]["checks"]}
    assert stages == {("smoke", True), ("verification", True)}


def test_demo_database_is_a_real_sqlite_file(tmp_path: Path) -> None:
    from monitor.store import Store

    path = tmp_path / "demo.db"
    run_demo(path, echo=lambda _line: None)
    with Store.open(path) as store:
        assert [r.version for r in store.releases("demo")] == ["v2.5", "v2.4", "v2.3", "v2.2", "v2.1"]
        assert store.sample_count("demo") > 1000


def test_demo_serve_stops_on_sigterm_and_removes_its_temporary_database() -> None:
    import re
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "monitor", "demo", "--serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r"database (\S+demo\.db)", first)
        assert found, first
        database = Path(found.group(1))
        for line in process.stdout:
            if line.startswith("serving "):
                break
        assert database.exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not database.parent.exists()
    finally:
        process.kill()
        process.wait()
