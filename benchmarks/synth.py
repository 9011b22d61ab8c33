"""How fast is an offline render? Whole-process `mlplat synth` and the in-process render, per stack.

Run from the repository root:  .venv/bin/python -m benchmarks.synth
Writes its section of docs/benchmarks.md. The baseline in the same run is a bare Python process start
(`python -c pass`) and the import of mlplat's infra modules, so the render's own share is visible.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.report import machine_description, write_section

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m benchmarks.synth"


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def run(argv: list[str]) -> None:
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)


def main(repeat: int = 5) -> None:
    python = sys.executable
    rows: list[tuple[str, list[float]]] = [
        ("process start: `python -c pass` (baseline)", timed(lambda: run([python, "-c", "pass"]), repeat)),
        ("process start + import mlplat.infra.synth", timed(lambda: run([python, "-c", "import mlplat.infra.synth"]),
                                                            repeat)),
    ]
    for stack in ("dev", "production"):
        rows.append((f"`mlplat synth {stack}` (whole process)",
                     timed(lambda s=stack: run([python, "-m", "mlplat.infra.cli", "synth", s, "-f", "json"]), repeat)))

    from mlplat.infra.synth import render_stack

    render_stack("dev", ROOT)  # warm imports once: the in-process figures are the render alone
    counts = {}
    for stack in ("dev", "production"):
        counts[stack] = len(render_stack(stack, ROOT).resources)
        rows.append((f"in-process render of {stack} ({counts[stack]} resources)",
                     timed(lambda s=stack: render_stack(s, ROOT), repeat)))

    baseline = statistics.median(rows[0][1])
    lines = [
        "## Offline render (`mlplat synth`)",
        "",
        f"Machine: {machine_description()}. Command: `{COMMAND}`. Median of {repeat} runs; ratio against a bare",
        "Python process start measured in the same run. Target: a full render in under 3 s.",
        "",
        "Where a whole-process render goes (cProfile of `mlplat synth production`): about 1.9 s is class creation",
        "while importing the provider SDKs (pulumi_aws.ec2, pulumi_kubernetes.core, ... evaluate their typed Args",
        "annotations at import), the render itself is the in-process figure below. The 3 s target was set for the",
        "64-resource stack of the first slice; the full platform (cluster, tracking, workloads) misses it.",
        "",
        "| what | median s | min s | x bare process |",
        "|---|---:|---:|---:|",
    ]
    for label, samples in rows:
        median = statistics.median(samples)
        lines.append(f"| {label} | {median:.3f} | {min(samples):.3f} | {median / baseline:.1f} |")
    write_section("synth", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
