"""The credits ledger's cost: per paid image, against the journal's, and `spend` over a long ledger.

A paid image writes two ledger lines (reserve, settle) and two journal records (submitting,
submitted). Both are measured in the same run, pair by pair, as the time the build's event loop
spends in them (the ledger's disk sync runs on its own thread); the target is a ledger that costs
the loop no more than the journal does (ratio <= 1.0). Then `spend --json --by day` totals a
ledger of 100,000 events as a subprocess (target <= 2 s, interpreter start included).

    python bench/ledger.py [--quick] [--images N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starbuild.engine.journal import Journal  # noqa: E402
from starbuild.spend.ledger import LEDGER_NAME, Ledger  # noqa: E402

RATIO_TARGET = 1.0
SPEND_TARGET = 2.0
REQUEST = {"model": "gpt-image-2", "prompt": "icon", "size": "1:1", "quality": "low"}


def ledger_pass(folder: Path, images: int) -> float:
    ledger = Ledger(folder / LEDGER_NAME, folder, env={})
    start = time.perf_counter()
    for i in range(images):
        attempt = ledger.reserve(f"icons/{i}", f"{i:064x}", REQUEST, 0.11)
        ledger.settle(attempt, f"task-unified-1757156493-{i:08d}", 0.11)
    elapsed = time.perf_counter() - start
    ledger.close()
    return elapsed


def journal_pass(folder: Path, images: int) -> float:
    journal = Journal(folder / "journal")
    start = time.perf_counter()
    for i in range(images):
        journal.intend(f"{i:064x}", f"icons/{i}", REQUEST)
        journal.submitted(f"{i:064x}", f"icons/{i}", REQUEST, f"task-unified-1757156493-{i:08d}", 0.11)
    elapsed = time.perf_counter() - start
    journal.close()
    return elapsed


def write_long_ledger(path: Path, events: int) -> None:
    days = 60
    with path.open("w") as fh:
        for i in range(events // 2):
            day = 1 + (i * days // (events // 2)) % 28
            base = {"time": f"2026-10-{day:02d}T10:00:00.000Z", "run": f"r{i // 100}", "commit": "c" * 40,
                    "branch": "main", "asset": f"icons/{i % 500}", "spec_hash": f"{i:064x}",
                    "model": "gpt-image-2", "size": "1:1", "quality": "low", "n": 1, "attempt": f"r.{i}"}
            fh.write(json.dumps({**base, "event": "reserve", "credits_estimated": 0.11}) + "\n")
            fh.write(json.dumps({**base, "event": "settle", "outcome": "accepted", "task_id": f"t{i}",
                                 "credits_reserved": 0.11}) + "\n")


def spend_seconds(cache: Path, project: Path) -> float:
    env = {**os.environ, "STARBUILD_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "starbuild", "-C", str(project), "spend", "--json", "--by", "day"],
                         env=env, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    assert json.loads(out.stdout)["images"] > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    images, runs = (300, 3) if args.quick else (args.images, args.runs)
    ratios, per_image = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            led, jour = ledger_pass(Path(a), images), journal_pass(Path(b), images)
        ratios.append(led / jour)
        per_image.append(led / images)
    ratio = statistics.median(ratios)
    print(f"ledger: {statistics.median(per_image) * 1e6:.0f} us of loop time per paid image (2 lines); "
          f"ledger / journal {ratio:.2f}x median of {runs} ({images} images); target <= {RATIO_TARGET:.1f}x: "
          f"{'met' if ratio <= RATIO_TARGET else 'MISSED'}")
    events = 20_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        cache, project = Path(tmp) / "cache", Path(tmp) / "proj"
        cache.mkdir()
        project.mkdir()
        write_long_ledger(cache / LEDGER_NAME, events)
        took = statistics.median(spend_seconds(cache, project) for _ in range(3))
    print(f"spend: {events} events totalled by day in {took:.3f} s median of 3 (subprocess); "
          f"target <= {SPEND_TARGET:.1f} s: {'met' if took <= SPEND_TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
