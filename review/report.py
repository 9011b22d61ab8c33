"""The report of ``mlplat diff`` (a pull request's comment), assembled stack by stack: the resource changes, the cost
delta and, with ``--check``, the head render's policy findings; and what it means for the exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplat.review.diff import RenderSource


@dataclass
class ChangeReport:
    """``mlplat diff``'s output for a base and a head, built stack by stack."""

    sources: tuple[RenderSource, RenderSource]
    with_check: bool
    stacks: list[dict[str, object]] = field(default_factory=list)
    """One JSON entry per stack."""
    sections: list[str] = field(default_factory=list)
    """One markdown section per stack."""
    blocked: bool = False
    """A change includes something ``pulumi up`` (or AWS) would refuse."""
    mandatory: bool = False
    """The head render breaks a mandatory policy (with ``--check``)."""

    def add(self, stack: str, old: dict[str, object], new: dict[str, object]) -> None:
        """Compare one stack's renders: resources, cost and (with ``--check``) the head's policy findings."""
        from mlplat.policy.check import check_render, environment_of, has_mandatory
        from mlplat.policy.check import to_markdown as check_markdown
        from mlplat.review import diff as diffing
        from mlplat.review.cost import diff_costs, estimate_or_unpriced

        base, head = self.sources
        change = diffing.diff_renders(old, new)
        self.blocked = self.blocked or bool(change.blockers)
        entry: dict[str, object] = {**change.to_json(), "code": {"base": base.code, "head": head.code}}
        markdown = diffing.to_markdown(change, [base.line(), head.line()])
        costs = diff_costs(estimate_or_unpriced(old), estimate_or_unpriced(new))
        if costs is not None:
            entry["cost"] = costs.to_json()
            markdown += "\n" + costs.markdown()
        if self.with_check:
            findings = check_render(new)
            self.mandatory = self.mandatory or has_mandatory(findings)
            entry["findings"] = [f.to_json() for f in findings]
            markdown += "\n" + check_markdown(findings, stack, environment_of(new))
        self.stacks.append(entry)
        self.sections.append(markdown)
