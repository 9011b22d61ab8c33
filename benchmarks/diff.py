"""`mlplat diff` on the production stack against two plain renders (target: under 2x their time).

    python benchmarks/diff.py [runs]

Two renders: `mlplat synth production -f json`, twice, one after the other (what a diff must at least do).
The diff: `mlplat diff HEAD -s production` (the ref unpacked and rendered with its own code, the working
tree rendered with its own, both at once, then the comparison, cascades and cost). Prints the medians.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLPLAT = [sys.executable, "-m", "mlplat.cli.app"]


def timed(args: list[str], ok: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    done = subprocess.run([*MLPLAT, *args], cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def main(runs: int = 3) -> None:
    renders = [
        timed(["synth", "production", "-f", "json"]) + timed(["synth", "production", "-f", "json"]) for _ in range(runs)
    ]
    diffs = [timed(["diff", "HEAD", "-s", "production"], ok=(0, 3)) for _ in range(runs)]
    two, diff = statistics.median(renders), statistics.median(diffs)
    print(f"two renders: {two:.2f} s, mlplat diff: {diff:.2f} s, ratio {diff / two:.2f} (target < 2)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
