"""The Markdown section of ``mlplat diff`` for a pull-request comment.

Order follows what a reviewer must act on: what ``pulumi up`` would refuse (with advice that fits the change),
then data and live services at risk (never folded), deletions and replacements, then additions and in-place
updates (folded when long). Values are shown in full: short ones in the table, long or multi-line ones and JSON
documents (IAM and bucket policies, Helm values, kubeconfigs) below it as a diff of the pretty-printed document,
so a one-word change in a policy is visible.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from mlplat.review.diff import (
    LIVE_TYPES,
    PHYSICAL_NAME_PATHS,
    STATEFUL_TYPES,
    UNKNOWN_AFTER,
    PropertyChange,
    ResourceChange,
    ResourceRef,
    StackDiff,
)

INLINE_MAX = 80
FOLD_ROWS = 20


def short_type(type_: str) -> str:
    """``aws:rds/parameterGroup:ParameterGroup`` -> ``aws:rds/ParameterGroup``; components keep their token."""
    parts = type_.split(":")
    if len(parts) == 3 and "/" in parts[1]:
        return f"{parts[0]}:{parts[1].rsplit('/', 1)[0]}/{parts[2]}"
    return type_


def _code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def _as_document(value: Any) -> Any | None:
    """A JSON document (object or array) carried as a value or as a JSON string, else None."""
    if isinstance(value, dict | list):
        return value
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict | list) else None
    return None


def _inline(value: Any) -> str | None:
    """The value as a table cell, or None when it needs a block below the table."""
    if value is None:
        return "_(none)_"
    if value == UNKNOWN_AFTER:
        return "_" + UNKNOWN_AFTER + "_"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if (
        "\n" in text
        or len(text) > INLINE_MAX
        or (isinstance(value, str) and _as_document(value) is not None and len(text) > 40)
    ):
        return None
    return _code(text)


def _lines(value: Any) -> list[str]:
    if value is None or value == UNKNOWN_AFTER:
        return []
    document = _as_document(value)
    if document is not None:
        return json.dumps(document, indent=2, sort_keys=True).splitlines()
    return (value if isinstance(value, str) else json.dumps(value, sort_keys=True)).splitlines()


def value_diff(before: Any, after: Any) -> str:
    """A fenced ``diff`` block with both values in full (JSON documents pretty-printed, keys sorted)."""
    old, new = _lines(before), _lines(after)
    body = list(difflib.unified_diff(old, new, lineterm="", n=max(len(old), len(new))))[2:]
    if not body:  # one side absent or identical text
        body = [f"-{line}" for line in old] + [f"+{line}" for line in new]
    if after == UNKNOWN_AFTER:
        body.append("+" + UNKNOWN_AFTER)
    fence = "~~~~" if any(line.lstrip("+- ").startswith("```") for line in body) else "```"
    return "\n".join([fence + "diff", *body, fence])


def _why(change: ResourceChange, names: dict[str, str]) -> str:
    reasons: list[str] = []
    for prop in change.changes:
        if not prop.replaces:
            continue
        if prop.cause:
            reasons.append(f"{_code(prop.path)} takes an output of replaced {_code(names.get(prop.cause, prop.cause))}")
        else:
            reasons.append(f"{_code(prop.path)} forces replacement")
    return "; ".join(dict.fromkeys(reasons)) or "—"


def _at_risk_rows(diff: StackDiff, names: dict[str, str]) -> list[str]:
    rows: list[str] = []
    for ref in diff.removed:
        what = STATEFUL_TYPES.get(ref.type) or LIVE_TYPES.get(ref.type)
        if what or ref.protected:
            rows.append(
                f"| **delete** | {_code(ref.name)}{_guards(ref)} | {_code(short_type(ref.type))} "
                f"| {what or 'protected resource'} | removed from the program |"
            )
    for change in diff.replaced:
        what = STATEFUL_TYPES.get(change.type) or LIVE_TYPES.get(change.type)
        if what or change.protected:
            rows.append(
                f"| **replace** | {_code(change.name)}{_guards(change)} | {_code(short_type(change.type))} "
                f"| {what or 'protected resource'} | {_why(change, names)} |"
            )
    return rows


def _guards(item: ResourceRef | ResourceChange) -> str:
    marks = [m for m, on in (("protected", item.protected), ("deletion protection", item.deletion_protection)) if on]
    return f" ({', '.join(marks)})" if marks else ""


def _advice(diff: StackDiff) -> list[str]:
    """One line per blocker or rename, saying what would actually work."""
    renamed = {r.old.urn: r for r in diff.renames}
    by_name = {c.name: c for c in diff.replaced}
    out: list[str] = []
    for blocker in diff.blockers:
        change = by_name.get(blocker.name)
        removed = next((r for r in diff.removed if r.name == blocker.name and r.type == blocker.type), None)
        if removed is not None and removed.urn in renamed:
            new = renamed[removed.urn].new
            out.append(
                f"{_code(blocker.name)}: a logical rename (same resource, new URN {_code(new.urn)}): add "
                f"`aliases=[pulumi.Alias(...)]` pointing at the old URN and Pulumi keeps it."
            )
        elif removed is not None:
            out.append(
                f"{_code(blocker.name)} is no longer in the program: revert the change; if it is meant, "
                "remove its protection (`protect`, `deletionProtection`) in a change of its own, back the "
                "data up, and delete it in the next one."
            )
        elif change is not None and change.cascaded:
            causes = sorted({c.cause for c in change.changes if c.cause})
            out.append(
                f"{_code(blocker.name)} is replaced because something it depends on is "
                f"({', '.join(_code(c.rsplit('::', 1)[-1]) for c in causes)}): revert that change, or plan a "
                "migration (a new resource beside the old one, then move the data)."
            )
        elif change is not None:
            physical = [c.path for c in change.changes if c.replaces and c.path in PHYSICAL_NAME_PATHS]
            if physical:
                out.append(
                    f"{_code(blocker.name)}: its physical name changes ({', '.join(map(_code, physical))}); "
                    "`aliases` cannot help (they keep logical names). Keep the old name, or create the new "
                    "resource beside the old one, copy the data, and retire the old one in a later change."
                )
            else:
                paths = ", ".join(_code(c.path) for c in change.changes if c.replaces)
                out.append(
                    f"{_code(blocker.name)}: {paths} cannot change in place; revert it, or plan a migration "
                    "(new resource beside the old one, move the data, then retire the old one)."
                )
    for rename in diff.renames:
        if rename.old.name in {b.name for b in diff.blockers}:
            continue
        out.append(
            f"{_code(rename.old.name)} ({_code(short_type(rename.old.type))}) moves to a new URN: add "
            "`aliases` to keep it instead of deleting and re-creating it."
        )
    return out


def _fold(rows: list[str], summary: str) -> list[str]:
    """A table, folded into <details> when long, so a PR comment stays readable."""
    if len(rows) - 2 <= FOLD_ROWS:
        return [*rows, ""]
    return [f"<details><summary>{summary}</summary>\n", *rows, "\n</details>\n"]


def _changes_table(changes: Iterable[ResourceChange], details: list[str]) -> list[str]:
    rows = ["| resource | type | property | before | after |", "|---|---|---|---|---|"]
    for change in changes:
        for prop in change.changes:
            flag = " **(forces replacement)**" if prop.replaces else ""
            before, after = _inline(prop.before), _inline(prop.after)
            if before is None or after is None:
                ref = f"[below](#{_anchor(change, prop)})"
                before, after = before or ref, after or ref
                details.append(
                    f'<a id="{_anchor(change, prop)}"></a>**{_code(change.name)}** '
                    f"({_code(short_type(change.type))}) {_code(prop.path)}:\n\n"
                    + value_diff(prop.before, prop.after)
                    + "\n"
                )
            rows.append(
                f"| {_code(change.name)} | {_code(short_type(change.type))} | {_code(prop.path)}{flag} "
                f"| {before} | {after} |"
            )
        if change.ignored:
            rows.append(
                f"| {_code(change.name)} | {_code(short_type(change.type))} | "
                f"{', '.join(map(_code, change.ignored))} | _ignored (`ignore_changes`)_ | |"
            )
    return rows


def _anchor(change: ResourceChange, prop: PropertyChange) -> str:
    text = f"{change.name}-{prop.path}".lower()
    return "mlplat-" + "".join(ch if ch.isalnum() else "-" for ch in text)[:90]


def _refs_table(refs: Sequence[ResourceRef], sign: str) -> list[str]:
    rows = ["| | resource | type |", "|---|---|---|"]
    rows += [
        f"| {sign} | {_code(r.name)}{_guards(r)} | {_code(short_type(r.type))} |"
        for r in sorted(refs, key=lambda r: (r.type, r.name))
    ]
    return rows


def to_markdown(diff: StackDiff, sources: Sequence[str] = ()) -> str:
    """A Markdown section for a PR comment; ``sources`` say which code rendered each side."""
    head = f"### Infrastructure diff: `{diff.stack}`\n"
    lines = [head]
    lines += [f"- {s}" for s in sources]
    if sources:
        lines.append("")
    if diff.empty:
        moved = f"; {len(diff.moved)} of them under a new URN, kept by their aliases" if diff.moved else ""
        return "\n".join([*lines, f"No changes ({diff.unchanged} resources unchanged{moved}).\n"])
    cascaded = sum(1 for c in diff.changed if c.cascaded)
    lines.append(
        f"**{len(diff.added)} to add, {len(diff.changed)} to change ({len(diff.replaced)} replaced"
        + (f"; {cascaded} only because something they depend on is replaced" if cascaded else "")
        + f"), {len(diff.removed)} to delete**, {diff.unchanged} unchanged"
        + (f"; {len(diff.moved)} move to a new URN and are kept by their aliases" if diff.moved else "")
        + ".\n"
    )
    names = {c.urn: c.name for c in diff.changed}
    if diff.blockers:
        lines.append("> [!CAUTION]\n> **`pulumi up` would refuse this change** (`mlplat diff` exits 3):")
        lines += [f"> - {b.action} {_code(b.name)} ({_code(short_type(b.type))}): {b.reason}" for b in diff.blockers]
        lines.append("")
    advice = _advice(diff)
    if advice:
        lines.append("**What to do:**\n")
        lines += [f"- {a}" for a in advice]
        lines.append("")
    risk = _at_risk_rows(diff, names)
    if risk:
        lines.append("#### Data and live services at risk\n")
        lines += ["| action | resource | type | what | why |", "|---|---|---|---|---|", *risk, ""]
    details: list[str] = []
    if diff.removed:
        lines.append(f"#### Deleted ({len(diff.removed)})\n")
        lines += [*_refs_table(diff.removed, "- delete"), ""]
    if diff.replaced:
        rows = ["| resource | type | why |", "|---|---|---|"]
        rows += [
            f"| {_code(c.name)}{_guards(c)} | {_code(short_type(c.type))} | {_why(c, names)} |"
            for c in sorted(diff.replaced, key=lambda c: (c.type, c.name))
        ]
        lines.append(f"#### Replaced ({len(diff.replaced)})\n")
        lines += _fold(rows, f"{len(diff.replaced)} replaced")
    if diff.added:
        lines.append(f"#### Added ({len(diff.added)})\n")
        lines += _fold(_refs_table(diff.added, "+ add"), f"{len(diff.added)} added")
    if diff.changed:
        lines.append(f"#### Property changes ({len(diff.changed)} resource{'s' if len(diff.changed) > 1 else ''})\n")
        lines += _fold(_changes_table(diff.changed, details), f"{len(diff.changed)} changed")
    if details:
        lines.append("#### Full values\n")
        lines += details
    return "\n".join(lines)
