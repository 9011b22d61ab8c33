"""How much do the contract rules add to `mlplat check production`? Whole process and in-process, same run.

Run from the repository root:  .venv/bin/python -m benchmarks.contracts
Writes its section of docs/benchmarks.md. The baseline is `mlplat check production` without the contract rules
(the policy rules alone: `mlplat.policy.check.RULES` replaced by `POLICY_RULES` before the command runs), measured
in the same rounds as the command with every rule. Budget: the contract rules add at most 0.3 s.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

from benchmarks.report import machine_description, timed, write_section

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m benchmarks.contracts"
BUDGET_S = 0.3

# `mlplat check production` as the console script runs it, with or without the contract rules.
CHECK = (
    "import sys; import mlplat.policy.check as checks; from mlplat.policy.rules import POLICY_RULES; {patch}"
    "sys.argv = ['mlplat', 'check', 'production']; from mlplat.cli.app import main; main()"
)
WITHOUT = (
    "checks.RULES = POLICY_RULES; "
    "_cr = checks.check_resources; "
    "checks.check_render = lambda d, e=None, p=None: _cr(checks.resources_from_render(d), "
    "e or checks.environment_of(d), POLICY_RULES, p); "
)


def run(argv: list[str]) -> None:
    # exit code 1 would mean a mandatory finding: the shipped stack has none, so insist on 0
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)


def main(repeat: int = 7) -> None:
    python = sys.executable
    processes = [
        (
            "`mlplat check production` without the contract rules (baseline)",
            [python, "-c", CHECK.format(patch=WITHOUT)],
        ),
        ("`mlplat check production` (policy + contract rules)", [python, "-c", CHECK.format(patch="")]),
    ]
    timings: dict[str, list[float]] = {label: [] for label, _ in processes}
    for _ in range(repeat):
        for label, argv in processes:
            timings[label] += timed(partial(run, argv), 1)

    from mlplat.infra.synth import render_stack
    from mlplat.policy.check import check_resources
    from mlplat.policy.framework import resources_from_render
    from mlplat.policy.rules import CONTRACT_RULES, POLICY_RULES

    document = json.loads(render_stack("production", ROOT).dumps())
    check_resources(resources_from_render(document), "production")  # warm: lazy imports, caches
    inner = {
        "policy rules": partial(lambda: check_resources(resources_from_render(document), "production", POLICY_RULES)),
        "contract rules": partial(
            lambda: check_resources(resources_from_render(document), "production", CONTRACT_RULES)
        ),
    }
    in_process = {label: timed(fn, max(repeat, 21)) for label, fn in inner.items()}

    base = statistics.median(timings[processes[0][0]])
    full = statistics.median(timings[processes[1][0]])
    lines = [
        "## Contract rules (`mlplat check`)",
        "",
        f"Machine: {machine_description()}. Command: `{COMMAND}`. Median of {repeat} rounds, each running both "
        "commands once; ratio against `mlplat check production` without the contract rules, measured in the same "
        f"run. Budget: the contract rules add at most {BUDGET_S} s.",
        "",
        "| what | median s | min s | x baseline |",
        "|---|---:|---:|---:|",
    ]
    for label, samples in timings.items():
        median = statistics.median(samples)
        lines.append(f"| {label} | {median:.3f} | {min(samples):.3f} | {median / base:.3f} |")
    lines += [
        "",
        f"Added by the contract rules (whole process, difference of medians): **{full - base:+.3f} s** "
        f"(budget {BUDGET_S} s; {'met' if full - base <= BUDGET_S else 'NOT met'}). The two whole-process medians "
        "differ by less than this shared machine's own spread, so the in-process figures below say more: the "
        f"{len(CONTRACT_RULES)} contract rules share one index of the render (`mlplat.policy.rules.contracts.graph`), "
        "built once per run.",
        "",
        f"| in process, production render ({len(document['resources'])} resources) | median ms | min ms |",
        "|---|---:|---:|",
    ]
    for label, samples in in_process.items():
        count = len(POLICY_RULES) if label == "policy rules" else len(CONTRACT_RULES)
        lines.append(f"| {count} {label} | {statistics.median(samples) * 1000:.1f} | {min(samples) * 1000:.1f} |")
    write_section("contracts", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
