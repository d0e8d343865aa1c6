"""Store speed: write 1,000 series x 1,440 scrapes (a day at one per minute), read it back.

Each scrape is its own transaction, as in the daemon. Prints figures; asserts nothing.

    python -m benchmarks.store_speed [--series 1000] [--scrapes 1440]   (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from monitor.store import Store


def time_write(store: Store, ids: np.ndarray, values: np.ndarray, start: float) -> float:
    """Seconds to write every column of `values` as one scrape each."""
    began = time.perf_counter()
    for column in range(values.shape[1]):
        store.write_scrape("bench", "10.0.0.1:8080", "v1", start + 60.0 * column,
                           ids, values[:, column])
    return time.perf_counter() - began


def time_read(store: Store, start: float, end: float, **kwargs: object) -> tuple[float, int]:
    """Best of three reads of the window: (seconds, samples read)."""
    best = float("inf")
    samples = 0
    for _ in range(3):
        began = time.perf_counter()
        window = store.read_window("bench", start, end, **kwargs)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - began)
        samples = int(np.count_nonzero(~np.isnan(window.values)))
    return best, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=1440)
    args = parser.parse_args()
    rng = np.random.default_rng(20260101)
    values = rng.normal(100.0, 10.0, size=(args.series, args.scrapes))
    start = 1_767_225_600.0
    end = start + 60.0 * args.scrapes
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        with Store.open(path) as store:
            keys = [f'bench_metric{{series="{i}"}}' for i in range(args.series)]
            began = time.perf_counter()
            ids = store.series_ids("bench", keys)
            created = time.perf_counter() - began
            written = time_write(store, ids, values, start)
            total = values.size
            print(f"create {args.series} series ids: {created * 1e3:.1f} ms")
            print(f"write {args.series} series x {args.scrapes} scrapes ({total:,} samples): "
                  f"{written:.3f} s, {total / written / 1e6:.2f} M samples/s, "
                  f"{written / args.scrapes * 1e6:.0f} us per scrape")
        print(f"file size: {path.stat().st_size / 1e6:.1f} MB "
              f"(+ WAL {Path(str(path) + '-wal').stat().st_size / 1e6:.1f} MB)"
              if Path(str(path) + "-wal").exists()
              else f"file size: {path.stat().st_size / 1e6:.1f} MB")
        with Store.open(path) as reader:  # a fresh process would start like this
            seconds, samples = time_read(reader, start, end)
            print(f"read whole window: {seconds * 1e3:.1f} ms, {samples / seconds / 1e6:.1f} "
                  f"M samples/s")
            some = ids[:: max(1, args.series // 10)]
            seconds, samples = time_read(reader, start, end, series=some)
            print(f"read {some.size} series of the window: {seconds * 1e3:.1f} ms")
            seconds, samples = time_read(reader, end - 3600.0, end)
            print(f"read the last hour: {seconds * 1e3:.1f} ms")
            window = reader.read_window("bench", start, end)
            exact = np.array_equal(window.values, values[np.argsort(ids)])
            print(f"read back equals written: {exact}")


if __name__ == "__main__":
    main()
