"""Compare two offline renders of a stack: what a PR adds, removes, changes and replaces, and what that cascades to.

Resources are matched by URN, or through their ``aliases`` as Pulumi matches them (a resource that moves under a new
parent with an alias to its old one is the same resource; a child moves with its aliased parent); a rename without
``aliases`` is a delete plus a create.
Changed resources list property-level changes, and a change to a property the provider cannot update in place
(a VPC's CIDR, a subnet's AZ, an RDS engine, a node group's instance types...) is flagged as a replacement, from
the sourced table in :mod:`mlplat.review.replacements`. Properties named in a resource's ``ignore_changes`` are
left out, as ``pulumi up`` leaves them.

**Cascades.** Offline ids do not change when a resource is replaced, so a replacement would otherwise move
nothing downstream. :func:`diff_renders` follows the dependency graph instead: every input of a dependant that
carries an output of a replaced resource (its id, ARN, endpoint...; found by value, from the engine's
deterministic mock outputs) becomes unknown until the replacement exists, which updates the dependant, or
replaces it when that input forces replacement, and so on down the graph. A replaced provider replaces every
resource it manages. Protected resources, and databases with deletion protection, that a change deletes or
replaces are the *blockers*: ``pulumi up`` (or AWS) refuses them.

Both sides render in subprocesses with their own code: a git ref from its tree (``git archive``), the working
tree from its folders (:func:`render_tree`), never whatever ``mlplat`` happens to be installed. Each render
says which code produced it (:class:`RenderSource`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat.review.replacements import forces_replacement, replace_paths

__all__ = [
    "STATEFUL_TYPES",
    "PropertyChange",
    "RefRenderError",
    "RenderSource",
    "ResourceChange",
    "ResourceRef",
    "StackDiff",
    "StackMissingAtRef",
    "diff_renders",
    "forces_replacement",
    "render_ref",
    "render_tree",
    "replace_paths",
    "to_markdown",
]

# Types whose deletion or replacement loses data or live state: never folded away in a PR comment.
STATEFUL_TYPES: dict[str, str] = {
    "aws:rds/instance:Instance": "database",
    "aws:rds/cluster:Cluster": "database",
    "aws:s3/bucket:Bucket": "bucket and its objects",
    "aws:s3/bucketV2:BucketV2": "bucket and its objects",
    "aws:ebs/volume:Volume": "volume",
    "aws:efs/fileSystem:FileSystem": "file system",
    "aws:dynamodb/table:Table": "table",
    "aws:ecr/repository:Repository": "image repository and its images",
    "aws:kms/key:Key": "KMS key (data encrypted with it becomes unreadable)",
    "aws:cloudwatch/logGroup:LogGroup": "log group and its logs",
    "aws:secretsmanager/secret:Secret": "secret",
    "random:index/randomPassword:RandomPassword": "generated password (a new one is generated)",
    "eks:index:Cluster": "Kubernetes cluster and everything running on it",
    "aws:eks/cluster:Cluster": "Kubernetes cluster and everything running on it",
    "kubernetes:core/v1:PersistentVolumeClaim": "persistent volume",
}
# Types that serve live traffic: deleting one takes a service down.
LIVE_TYPES: dict[str, str] = {
    "mlplat:serving:ModelService": "model service",
    "kubernetes:apps/v1:Deployment": "workload",
    "kubernetes:apps/v1:StatefulSet": "workload",
    "kubernetes:core/v1:Service": "service endpoint",
    "kubernetes:networking.k8s.io/v1:Ingress": "load balancer / ingress",
    "kubernetes:helm.sh/v3:Release": "Helm release",
}
# Inputs that hold a resource's physical name: a change replaces it under a new name, and aliases cannot help.
PHYSICAL_NAME_PATHS = frozenset(
    {
        "name",
        "namePrefix",
        "bucket",
        "bucketPrefix",
        "identifier",
        "identifierPrefix",
        "clusterIdentifier",
        "nodeGroupName",
        "metadata.name",
        "metadata.namespace",
        "repository",
    }
)
UNKNOWN_AFTER = "(known after replacement)"
MASK = "[secret]"  # how the engine records a secret input


def is_stateful(type_: str) -> bool:
    """Whether deleting or replacing a ``type_`` loses data or live state."""
    return type_ in STATEFUL_TYPES


@dataclass(frozen=True)
class PropertyChange:
    """One property that differs: its path, both values (None when absent), whether it replaces, and the
    replaced resource (URN) whose new output it waits for, when the change cascades from one."""

    path: str
    before: Any
    after: Any
    replaces: bool
    cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        out = {"path": self.path, "before": self.before, "after": self.after, "replaces": self.replaces}
        if self.cause:
            out["after"] = UNKNOWN_AFTER
            out["cascade_from"] = self.cause
        return out


def _guard(record: Mapping[str, Any]) -> tuple[bool, bool]:
    """(protected, deletion protection on) of a record."""
    options, inputs = record.get("options") or {}, record.get("inputs") or {}
    return bool(options.get("protect")), inputs.get("deletionProtection") is True


@dataclass(frozen=True)
class ResourceChange:
    """A resource present in both renders whose inputs or guard options differ (or wait for a replacement)."""

    urn: str
    type: str
    name: str
    changes: tuple[PropertyChange, ...]
    protected: bool
    deletion_protection: bool = False
    ignored: tuple[str, ...] = ()

    @property
    def replaces(self) -> bool:
        """Whether any change forces the resource to be replaced."""
        return any(c.replaces for c in self.changes)

    @property
    def cascaded(self) -> bool:
        """Whether the resource changes only because something it depends on is replaced."""
        return all(c.cause for c in self.changes)

    @property
    def stateful(self) -> bool:
        """Whether replacing it loses data or live state."""
        return is_stateful(self.type)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "replace": self.replaces,
            "protected": self.protected,
            "deletion_protection": self.deletion_protection,
            "stateful": self.stateful,
            "cascade": self.cascaded,
            "ignored_by_ignore_changes": list(self.ignored),
            "changes": [c.to_json() for c in self.changes],
        }


@dataclass(frozen=True)
class ResourceRef:
    """An added or removed resource."""

    urn: str
    type: str
    name: str
    protected: bool = False
    deletion_protection: bool = False
    physical: str | None = None

    @property
    def stateful(self) -> bool:
        """Whether deleting it loses data or live state."""
        return is_stateful(self.type)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "protected": self.protected,
            "deletion_protection": self.deletion_protection,
            "stateful": self.stateful,
        }


@dataclass(frozen=True)
class Blocker:
    """A resource ``pulumi up`` (or AWS) will refuse to delete or replace, and why."""

    name: str
    type: str
    action: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """A plain dict for JSON output."""
        return {"name": self.name, "type": self.type, "action": self.action, "reason": self.reason}


@dataclass(frozen=True)
class Rename:
    """A removed and an added resource that are one logical resource under a new URN (aliases keep it)."""

    old: ResourceRef
    new: ResourceRef


@dataclass
class StackDiff:
    """Everything that differs between a base and a head render of one stack."""

    stack: str
    added: list[ResourceRef] = field(default_factory=list)
    removed: list[ResourceRef] = field(default_factory=list)
    changed: list[ResourceChange] = field(default_factory=list)
    unchanged: int = 0
    renames: list[Rename] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)
    """Old URN -> new URN of the resources their aliases keep (no delete, no create)."""

    @property
    def replaced(self) -> list[ResourceChange]:
        """Changed resources that will be replaced."""
        return [c for c in self.changed if c.replaces]

    @property
    def empty(self) -> bool:
        """Whether nothing differs."""
        return not (self.added or self.removed or self.changed)

    @property
    def blockers(self) -> list[Blocker]:
        """What ``pulumi up`` would refuse: protected resources, or databases with deletion protection, that
        this change deletes or replaces."""
        found: list[Blocker] = []
        items: list[tuple[str, str, str, bool, bool]] = [
            (r.name, r.type, "delete", r.protected, r.deletion_protection) for r in self.removed
        ]
        items += [(c.name, c.type, "replace", c.protected, c.deletion_protection) for c in self.replaced]
        for name, type_, action, protected, deletion_protection in items:
            if protected:
                found.append(Blocker(name, type_, action, "protected (`protect`): `pulumi up` refuses to " + action))
            elif deletion_protection:
                found.append(Blocker(name, type_, action, "deletion protection on: AWS refuses the delete"))
        return sorted(found, key=lambda b: (b.type, b.name))

    @property
    def blocked(self) -> list[str]:
        """Names of resources this change would delete or replace that ``pulumi up`` refuses."""
        return sorted({b.name for b in self.blockers})

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "stack": self.stack,
            "summary": {
                "added": len(self.added),
                "removed": len(self.removed),
                "changed": len(self.changed),
                "replaced": len(self.replaced),
                "unchanged": self.unchanged,
                "cascaded": sum(1 for c in self.changed if c.cascaded),
            },
            "blocked_by_protect": self.blocked,
            "blockers": [b.to_json() for b in self.blockers],
            "renames": [{"from": r.old.urn, "to": r.new.urn} for r in self.renames],
            "moved": [{"from": old, "to": new} for old, new in sorted(self.moved.items())],
            "added": [r.to_json() for r in self.added],
            "removed": [r.to_json() for r in self.removed],
            "changed": [c.to_json() for c in self.changed],
        }


def _walk(before: Any, after: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Leaf-level differences; lists of different length (or of scalars) compare as a whole."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(set(before) | set(after)):
            sub = f"{path}.{key}" if path else str(key)
            yield from _walk(before.get(key), after.get(key), sub)
    elif (
        isinstance(before, list)
        and isinstance(after, list)
        and len(before) == len(after)
        and any(isinstance(v, Mapping | list) for v in before + after)
    ):
        for index, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _walk(b, a, f"{path}[{index}]")
    elif before != after:
        yield path, before, after


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from _leaves(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def _get(value: Any, path: str) -> Any:
    """The value at a dotted/indexed path, or None."""
    current = value
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            index = int(part[1:-1])
            current = current[index] if isinstance(current, list) and index < len(current) else None
        else:
            current = current.get(part) if isinstance(current, Mapping) else None
        if current is None:
            return None
    return current


def _ignored(path: str, ignore: Sequence[str]) -> bool:
    """Whether ``ignore_changes`` (Pulumi's property paths) covers ``path``."""
    for pattern in ignore:
        pattern = pattern.replace('["', ".").replace('"]', "").replace("[*]", "")
        if path == pattern or path.startswith((pattern + ".", pattern + "[")):
            return True
    return False


GUARD_OPTIONS = ("protect", "retain_on_delete", "delete_before_replace", "ignore_changes")


def _record_changes(
    type_: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[list[PropertyChange], list[str]]:
    """The changes from ``before`` to ``after`` of one resource, and the paths ``ignore_changes`` hides."""
    ignore = (after.get("options") or {}).get("ignore_changes") or []
    changes: list[PropertyChange] = []
    ignored: list[str] = []
    for p, b, a in _walk(before.get("inputs") or {}, after.get("inputs") or {}, ""):
        if _ignored(p, ignore):
            ignored.append(p)
        else:
            changes.append(PropertyChange(p, b, a, forces_replacement(type_, p)))
    b_opts, a_opts = before.get("options") or {}, after.get("options") or {}
    for option in GUARD_OPTIONS:
        if b_opts.get(option) != a_opts.get(option):
            changes.append(PropertyChange(f"options.{option}", b_opts.get(option), a_opts.get(option), False))
    # Moving a resource to another provider instance makes Pulumi replace it (the old provider deletes it).
    if b_opts.get("provider") != a_opts.get("provider") and not type_.startswith("pulumi:providers:"):
        changes.append(PropertyChange("options.provider", b_opts.get("provider"), a_opts.get("provider"), True))
    return changes, ignored


def _physical(record: Mapping[str, Any]) -> str | None:
    inputs = record.get("inputs") or {}
    for key in ("bucket", "identifier", "name", "clusterIdentifier"):
        if isinstance(inputs.get(key), str):
            return str(inputs[key])
    meta = inputs.get("metadata")
    if isinstance(meta, Mapping) and meta.get("name"):
        return f"{meta.get('namespace', '')}/{meta['name']}"
    return None


def _ref(record: Mapping[str, Any]) -> ResourceRef:
    protected, deletion_protection = _guard(record)
    return ResourceRef(record["urn"], record["type"], record["name"], protected, deletion_protection, _physical(record))


def _output_values(record: Mapping[str, Any], project: str, stack: str, region: str) -> set[str]:
    """The distinctive output strings of a resource (id, ARN, endpoints...): unknown again once it is replaced.

    Taken from the engine's own deterministic mock outputs, minus what merely echoes an input (a name the
    program sets stays known across a replacement only in the sense that the program sets it again)."""
    from mlplat.infra.mock_outputs import MockOutputs

    inputs = dict(record.get("inputs") or {})
    mocks = MockOutputs(project, stack, region)
    try:
        _, computed = mocks.outputs(record["type"], record["name"], inputs)
        # What a same-typed resource of another name also gets (the account id, fixed strings) is not its own.
        renamed = {k: v + "-other" if isinstance(v, str) else v for k, v in inputs.items()}
        _, other = mocks.outputs(record["type"], record["name"] + "-other", renamed)
    except Exception:  # a mock that cannot answer for masked inputs: fall back to nothing
        return set()
    common = {v for _, v in _leaves(other) if isinstance(v, str)}
    echoed = {v for _, v in _leaves(inputs) if isinstance(v, str)}
    values: set[str] = set()
    for _, value in _leaves(computed):
        if isinstance(value, str) and len(value) >= 10 and value not in common:
            # An output that echoes an input (a name the program sets) counts only where used verbatim.
            values.add(f"={value}" if value in echoed else value)
    return values


def _carries(value: Any, values: set[str], takes_output: bool | None = None) -> bool:
    """Whether an input value holds one of ``values`` (``=x``: exactly x; else: x within it). ``takes_output``:
    whether the input depends on the resource at all, where the render records it (its property dependencies)."""
    if takes_output is False:
        return False
    if value == MASK:  # a secret input is masked: it may carry the output, unless it provably takes none of it
        return True
    if not isinstance(value, str):
        return False
    return any(value == v[1:] if v.startswith("=") else v in value for v in values)


def _region(doc: Mapping[str, Any]) -> str:
    for record in doc.get("resources") or []:
        if record["type"] == "pulumi:providers:aws" and (record.get("inputs") or {}).get("region"):
            return str(record["inputs"]["region"])
    return "us-east-1"


def _cascade(
    result: StackDiff,
    old: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
    head: Mapping[str, Any],
) -> None:
    """Propagate replacements to the resources that take their outputs (or are managed by them)."""
    project, stack, region = str(head.get("project") or "mlplat"), result.stack, _region(head)
    dependants: dict[str, list[str]] = {}
    for urn, record in new.items():
        options = record.get("options") or {}
        for dep in {*(options.get("depends_on") or []), options.get("provider")}:
            if dep:
                dependants.setdefault(str(dep), []).append(urn)
    by_urn = {c.urn: c for c in result.changed}
    queue = [c.urn for c in result.changed if c.replaces]
    seen: set[str] = set()
    while queue:
        cause = queue.pop(0)
        if cause in seen:
            continue
        seen.add(cause)
        values = _output_values(new[cause], project, stack, region)
        is_provider = new[cause]["type"].startswith("pulumi:providers:")
        for urn in sorted(dependants.get(cause, [])):
            if urn not in old:
                continue  # created anyway
            record = new[urn]
            type_ = record["type"]
            ignore = (record.get("options") or {}).get("ignore_changes") or []
            found: list[PropertyChange] = []
            if is_provider and (record.get("options") or {}).get("provider") == cause:
                found.append(PropertyChange("options.provider", cause, UNKNOWN_AFTER, True, cause))
            deps = (record.get("options") or {}).get("property_dependencies")
            for path, value in _leaves(record.get("inputs") or {}):
                takes = None if deps is None else cause in deps.get(re.split(r"[.\[]", path, maxsplit=1)[0], ())
                if _carries(value, values, takes) and not _ignored(path, ignore):
                    found.append(
                        PropertyChange(
                            path,
                            _get(old[urn].get("inputs") or {}, path),
                            UNKNOWN_AFTER,
                            forces_replacement(type_, path),
                            cause,
                        )
                    )
            if not found:
                continue
            existing = by_urn.get(urn)
            known = {c.path for c in existing.changes} if existing else set()
            extra = tuple(c for c in found if c.path not in known)
            if not extra:
                continue
            was_replaced = existing is not None and existing.replaces
            if existing is None:
                protected, deletion_protection = _guard(old[urn])
                change = ResourceChange(urn, type_, record["name"], extra, protected, deletion_protection)
                result.changed.append(change)
                result.unchanged -= 1
            else:
                change = ResourceChange(
                    urn,
                    type_,
                    existing.name,
                    existing.changes + extra,
                    existing.protected,
                    existing.deletion_protection,
                    existing.ignored,
                )
                result.changed[result.changed.index(existing)] = change
            by_urn[urn] = change
            if change.replaces and not was_replaced:
                queue.append(urn)
    result.changed.sort(key=lambda c: c.urn)


def _comparable(record: Mapping[str, Any]) -> str:
    inputs = {k: v for k, v in (record.get("inputs") or {}).items() if k not in ("tags", "name", "bucket")}
    return json.dumps(inputs, sort_keys=True)


def _renames(
    removed: Sequence[ResourceRef],
    added: Sequence[ResourceRef],
    old: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
) -> list[Rename]:
    """Removed/added pairs that are one logical resource under a new URN: same type, and the same physical
    name, the same logical name (re-parented) or the same inputs (an auto-named resource renamed)."""
    pairs: list[Rename] = []
    taken: set[str] = set()
    for gone in removed:
        for came in added:
            if came.urn in taken or came.type != gone.type:
                continue
            same_physical = gone.physical is not None and gone.physical == came.physical
            same_name = gone.name == came.name  # re-parented
            same_inputs = _comparable(old[gone.urn]) == _comparable(new[came.urn])
            if same_physical or same_name or same_inputs:
                pairs.append(Rename(gone, came))
                taken.add(came.urn)
                break
    return pairs


def _qualified_type(urn: str) -> str:
    """The type chain of a URN (``urn:pulumi:<stack>::<project>::<parent types>$<type>::<name>``)."""
    parts = urn.split("::")
    return parts[2] if len(parts) >= 4 else ""  # "" for a URN of another shape (a hand-written render)


def _with_parent_chain(urn: str, parent_chain: str | None) -> str:
    """``urn`` as it reads under a parent whose type chain is ``parent_chain`` (None: the stack, no parent)."""
    if urn.count("::") < 3:
        return urn
    prefix, project, chain, name = urn.split("::", 3)
    own = chain.rsplit("$", 1)[-1]
    return "::".join([prefix, project, own if parent_chain is None else f"{parent_chain}${own}", name])


def _alias_urns(record: Mapping[str, Any]) -> list[str]:
    """The URNs a record's ``aliases`` say it had: an explicit URN, or its own under another parent (the only
    alias specs mlplat writes; name, type, stack or project changes are not followed)."""
    urns: list[str] = []
    for text in (record.get("options") or {}).get("aliases") or []:
        alias = json.loads(text) if isinstance(text, str) else text
        if alias.get("urn"):
            urns.append(str(alias["urn"]))
            continue
        spec = alias.get("spec") or {}
        if set(spec) - {"parentUrn", "noParent"}:
            continue
        if spec.get("noParent"):
            urns.append(_with_parent_chain(record["urn"], None))
        elif spec.get("parentUrn"):
            parent = str(spec["parentUrn"])
            is_stack = _qualified_type(parent) == "pulumi:pulumi:Stack"
            urns.append(_with_parent_chain(record["urn"], None if is_stack else _qualified_type(parent)))
    return urns


def _moved(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Old URN -> new URN of the resources that keep their identity through aliases: their own, or an ancestor's
    (Pulumi derives a child's aliases from its parent's), in parent-first order."""
    moved: dict[str, str] = {}
    new_to_old: dict[str, str] = {}
    for urn in sorted(new, key=lambda u: _qualified_type(u).count("$")):  # parents (shorter chains) first
        record = new[urn]
        if urn in old:
            continue
        candidates = _alias_urns(record)
        parent = record.get("parent")
        if parent in new_to_old:  # under a parent that moved: its URN under the parent's old type chain
            old_parent = new_to_old[str(parent)]
            is_stack = _qualified_type(old_parent) == "pulumi:pulumi:Stack"
            candidates.append(_with_parent_chain(urn, None if is_stack else _qualified_type(old_parent)))
        for candidate in candidates:
            if candidate in old and candidate not in new and candidate not in moved:
                moved[candidate] = urn
                new_to_old[urn] = candidate
                break
    return moved


def diff_renders(base: Mapping[str, Any], head: Mapping[str, Any]) -> StackDiff:
    """What changes from ``base`` to ``head`` (two ``Render.to_json()`` documents of one stack)."""

    # The stack resource itself carries nothing a reviewer needs.
    def index(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        return {r["urn"]: r for r in doc.get("resources") or [] if r["type"] != "pulumi:pulumi:Stack"}

    old, new = index(base), index(head)
    result = StackDiff(stack=str(head.get("stack") or base.get("stack") or "?"))
    result.moved = _moved(old, new)
    old = {result.moved.get(urn, urn): record for urn, record in old.items()}  # an aliased resource is itself
    result.added = [_ref(new[u]) for u in sorted(new.keys() - old.keys())]
    result.removed = [_ref(old[u]) for u in sorted(old.keys() - new.keys())]
    for urn in sorted(old.keys() & new.keys()):
        changes, ignored = _record_changes(new[urn]["type"], old[urn], new[urn])
        if changes:
            protected, deletion_protection = _guard(old[urn])
            result.changed.append(
                ResourceChange(
                    urn,
                    new[urn]["type"],
                    new[urn]["name"],
                    tuple(changes),
                    protected,
                    deletion_protection,
                    tuple(ignored),
                )
            )
        else:
            result.unchanged += 1
    _cascade(result, old, new, head)
    result.renames = _renames(result.removed, result.added, old, new)
    return result


def to_markdown(diff: StackDiff, sources: Sequence[str] = ()) -> str:
    """A Markdown section for a PR comment (:mod:`mlplat.review.diff_report`)."""
    from mlplat.review.diff_report import to_markdown as report

    return report(diff, sources)


# ----------------------------------------------------------------------------------------------------------
# Rendering a git ref or the working tree, each with its own code


class RefRenderError(RuntimeError):
    """A git ref could not be unpacked or its stack could not be rendered."""


class StackMissingAtRef(RefRenderError):
    """The stack has no ``Pulumi.<stack>.yaml`` at the ref (a stack the change adds or removes)."""


@dataclass(frozen=True)
class RenderSource:
    """Which code rendered one side of a diff, in words a reviewer can check."""

    side: str
    spec: str
    code: str

    def line(self) -> str:
        """One Markdown line."""
        return f"**{self.side}:** {self.code}"


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=120)
    except FileNotFoundError as exc:
        raise RefRenderError("git is not installed; pass two JSON renders instead") from exc
    if done.returncode != 0:
        raise RefRenderError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def repo_root(path: Path) -> Path:
    """The top of the git work tree holding ``path``."""
    return Path(_git(path, "rev-parse", "--show-toplevel").decode().strip())


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` names; :class:`RefRenderError` when it names none."""
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()


def is_ref(repo: Path, ref: str) -> bool:
    """Whether ``ref`` names a commit in ``repo``."""
    try:
        resolve_ref(repo, ref)
    except RefRenderError:
        return False
    return True


def unpack_ref(repo: Path, ref: str, into: Path) -> None:
    """Write the tree of ``ref`` into ``into`` (no checkout: the work tree is untouched)."""
    commit = resolve_ref(repo, ref)
    archive = into / "ref.tar"
    archive.write_bytes(_git(repo, "archive", "--format=tar", commit))
    with tarfile.open(archive) as tar:
        tar.extractall(into / "src", filter="data")
    archive.unlink()


def _package_dirs(src: Path) -> dict[str, str]:
    pyproject = src / "pyproject.toml"
    if not pyproject.exists():
        return {}
    setuptools = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {})
    return {
        k: v
        for k, v in (setuptools.get("package-dir") or {}).items()
        if k.startswith("mlplat.") and k.count(".") == 1 and (src / v).is_dir()
    }


def _package_links(src: Path, into: Path) -> Path:
    """A folder where ``mlplat/<pkg>`` points at ``src``'s folders, per its pyproject's package-dir."""
    root = into / "pkgs"
    (root / "mlplat").mkdir(parents=True)
    for package, folder in _package_dirs(src).items():
        (root / "mlplat" / package.split(".", 1)[1]).symlink_to((src / folder).resolve(), target_is_directory=True)
    return root


def code_root(project: Path) -> Path | None:
    """The nearest folder at or above ``project`` whose pyproject maps the ``mlplat`` packages (its code)."""
    for folder in (project, *project.parents):
        if _package_dirs(folder):
            return folder
    return None


DIFF_IMAGE_TAG = "diff"
"""The image tag both sides of ``mlplat diff`` render when ``MLPLAT_IMAGE_TAG`` is unset."""


def _entry_point(src: Path | None) -> tuple[str, str]:
    """The ``mlplat`` command's module and function in the code at ``src`` (its pyproject's ``[project.scripts]``):
    a ref renders with its own CLI, wherever that code kept it (``mlplat.infra.cli`` before ``mlplat.cli.app``)."""
    pyproject = None if src is None else src / "pyproject.toml"
    if pyproject is not None and pyproject.exists():
        target = tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}).get("mlplat")
        if isinstance(target, str) and ":" in target:
            module, function = target.split(":", 1)
            return module, function
    return "mlplat.cli.app", "main"


def _synth(
    project: Path, stack: str, pkgs: Path | None, what: str, timeout: float, src: Path | None = None
) -> dict[str, Any]:
    """Render ``stack`` of ``project`` in a subprocess whose ``mlplat`` packages come from ``pkgs``, with the CLI of
    the code at ``src``."""
    env = dict(os.environ)
    # Both sides render one image tag: which commit's images run is the deploy's input (MLPLAT_IMAGE_TAG), not
    # the change's, and a ref unpacked from git has no work tree to take its commit from (mlplat.infra.images).
    env.setdefault("MLPLAT_IMAGE_TAG", DIFF_IMAGE_TAG)
    if pkgs is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkgs), os.environ.get("PYTHONPATH")]))
    module, function = _entry_point(src)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.argv[0] = 'mlplat'; from {module} import {function}; {function}()",
                "synth",
                stack,
                "--format",
                "json",
                "-C",
                str(project),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=project,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RefRenderError(f"rendering {stack!r} {what} took more than {timeout:g} s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RefRenderError(f"rendering {stack!r} {what} failed: " + " / ".join(tail))
    try:
        document: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        raise RefRenderError(f"rendering {stack!r} {what} printed no JSON render ({exc})") from exc
    return document


def render_ref(repo: Path, ref: str, stack: str, project_subdir: str = ".", timeout: float = 300) -> dict[str, Any]:
    """Render ``stack`` as it is at git ``ref``: the ref's stack files and program, in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="mlplat-diff-") as tmp:
        where = Path(tmp)
        unpack_ref(repo, ref, where)
        project = where / "src" / project_subdir
        if not (project / f"Pulumi.{stack}.yaml").exists():
            raise StackMissingAtRef(f"stack {stack!r} does not exist at {ref} (no Pulumi.{stack}.yaml)")
        pkgs = _package_links(where / "src", where)
        return _synth(project, stack, pkgs, f"at {ref}", timeout, where / "src")


def render_tree(project: Path, stack: str, timeout: float = 300) -> dict[str, Any]:
    """Render ``stack`` from the working tree: its stack files and the code in its folders (not the installed
    ``mlplat``, which may be another checkout or a release), in a subprocess."""
    root = code_root(project)
    if root is None:
        return _synth(project, stack, None, "in the working tree (installed mlplat)", timeout)
    with tempfile.TemporaryDirectory(prefix="mlplat-diff-") as tmp:
        return _synth(project, stack, _package_links(root, Path(tmp)), "in the working tree", timeout, root)


def describe_ref(repo: Path, ref: str, side: str) -> RenderSource:
    """Which code renders a ref: that commit's own."""
    commit = resolve_ref(repo, ref)
    return RenderSource(side, ref, f"`{ref}` at `{commit[:12]}`, rendered with that commit's own code")


def describe_tree(project: Path, side: str) -> RenderSource:
    """Which code renders the working tree: its own folders (and whether they differ from HEAD)."""
    root = code_root(project)
    if root is None:
        import importlib.metadata

        version = importlib.metadata.version("mlplat")
        return RenderSource(
            side,
            "working tree",
            f"the working tree's stack files, rendered with the installed "
            f"mlplat {version} (no mlplat source tree above {project})",
        )
    state = ""
    try:
        head = _git(root, "rev-parse", "--short=12", "HEAD").decode().strip()
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no").strip())
        state = f" (HEAD `{head}`{' plus uncommitted changes' if dirty else ''})"
    except RefRenderError:
        pass
    return RenderSource(side, "working tree", f"the working tree{state}, rendered with its own code (`{root}`)")


def describe_file(path: Path, side: str) -> RenderSource:
    """A saved render: whatever code wrote it."""
    return RenderSource(side, str(path), f"the saved render `{path}` (its code is whatever wrote it)")
