"""What ``mlplat check`` runs: every rule over a render, and the findings as text, Markdown or GitHub annotations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlplat.policy.framework import (
    Finding,
    PolicyConfig,
    Resource,
    ResourceRule,
    Rule,
    Violation,
    environment_of,
    policy_in_force,
    resources_from_render,
)
from mlplat.policy.rules import RULES


def _finding(rule: Rule, environment: str, res: Resource, violation: Violation) -> Finding:
    return Finding(
        rule.id, rule.levels.for_environment(environment), res.urn, res.name, res.type, violation.problem, violation.fix
    )


def check_resources(
    resources: Sequence[Resource], environment: str, rules: Iterable[Rule] = RULES, policy: PolicyConfig | None = None
) -> list[Finding]:
    """Run ``rules`` over ``resources``; findings sorted mandatory first, then by rule and resource."""
    findings: list[Finding] = []
    with policy_in_force(policy):
        for rule in rules:
            if isinstance(rule, ResourceRule):
                for res in resources:
                    if rule.applies_to(res.type):
                        findings.extend(_finding(rule, environment, res, v) for v in rule.check(res))
            else:
                findings.extend(_finding(rule, environment, res, v) for res, v in rule.check(resources))
    return sorted(findings, key=lambda f: (f.enforcement != "mandatory", f.rule, f.urn, f.problem))


def check_render(
    document: Mapping[str, Any], environment: str | None = None, policy: PolicyConfig | None = None
) -> list[Finding]:
    """Run every rule over a render's JSON form (``Render.to_json()``)."""
    env = environment or environment_of(document)
    return check_resources(resources_from_render(document), env, policy=policy)


def has_mandatory(findings: Iterable[Finding]) -> bool:
    """Whether any finding blocks the deployment."""
    return any(f.enforcement == "mandatory" for f in findings)


# ----------------------------------------------------------------------------------------------------------
# Reports


def to_markdown(findings: Sequence[Finding], stack: str, environment: str) -> str:
    """A Markdown section for a PR comment."""
    mandatory = sum(f.enforcement == "mandatory" for f in findings)
    advisory = len(findings) - mandatory
    head = f"### Policy check: `{stack}` ({environment})\n\n"
    if not findings:
        return head + f"All {len(RULES)} rules pass.\n"
    lines = [
        head + f"**{mandatory} mandatory**, {advisory} advisory finding(s).\n",
        "| level | rule | resource | problem | fix |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        level = "**mandatory**" if f.enforcement == "mandatory" else "advisory"
        lines.append(f"| {level} | `{f.rule}` | `{f.resource}` ({f.type}) | {_cell(f.problem)} | {_cell(f.fix)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_text(findings: Sequence[Finding], stack: str, environment: str) -> str:
    """Plain text, one block per finding (what ``mlplat check`` prints)."""
    if not findings:
        return f"{stack} ({environment}): all {len(RULES)} rules pass\n"
    mandatory = sum(f.enforcement == "mandatory" for f in findings)
    out = [f"{stack} ({environment}): {mandatory} mandatory, {len(findings) - mandatory} advisory finding(s)"]
    for f in findings:
        out.append(f"[{f.enforcement}] {f.rule}: {f.resource} ({f.type})\n  problem: {f.problem}\n  fix: {f.fix}")
    return "\n".join(out) + "\n"


def _escape(text: str, *, property_: bool = False) -> str:
    """GitHub workflow-command escaping (actions/toolkit, command.ts: escapeData / escapeProperty)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_ else text


def to_github(findings: Sequence[Finding], stack: str, environment: str, file: str | None = None) -> str:
    """GitHub Actions annotations: ``::error`` for mandatory findings, ``::warning`` for advisory ones."""
    lines = []
    where = f"file={_escape(file, property_=True)}," if file else ""
    for f in findings:
        level = "error" if f.enforcement == "mandatory" else "warning"
        title = _escape(f"mlplat check {stack} ({environment}): {f.rule}", property_=True)
        message = _escape(f"{f.resource} ({f.type}): {f.problem}. Fix: {f.fix}")
        lines.append(f"::{level} {where}title={title}::{message}")
    if not findings:
        lines.append(f"::notice title={_escape(f'mlplat check {stack}', property_=True)}::all {len(RULES)} rules pass")
    return "\n".join(lines) + "\n"
