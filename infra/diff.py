"""Compare two offline renders of a stack: what a PR adds, removes, changes and replaces.

Resources are matched by URN (as Pulumi matches them; a rename without ``aliases`` is a delete plus a create).
Changed resources list property-level changes, and a change to a property the provider cannot update in place
(a VPC's CIDR, a subnet's AZ, an RDS engine, a node group's instance types...) is flagged as a replacement,
from :data:`REPLACE_ON_CHANGE`. A replaced or removed protected resource is called out: ``pulumi up`` refuses it.

The base render may come from a git ref: :func:`render_ref` unpacks the ref's tree (``git archive``) into a
temporary folder and renders its stack with its own code, in a subprocess whose import path maps the ``mlplat``
packages to that tree, so the comparison covers program changes as well as stack-file changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Properties whose change forces a replacement, by type (dotted paths, as the wire inputs nest them). From the
# providers' schemas ("replaceOnChanges"/ForceNew) for the types mlplat creates or is likely to create.
REPLACE_ON_CHANGE: dict[str, frozenset[str]] = {
    "aws:ec2/vpc:Vpc": frozenset({"cidrBlock", "instanceTenancy"}),
    "aws:ec2/subnet:Subnet": frozenset({"cidrBlock", "availabilityZone", "availabilityZoneId", "vpcId"}),
    "aws:ec2/natGateway:NatGateway": frozenset({"subnetId", "allocationId", "connectivityType", "privateIp"}),
    "aws:ec2/eip:Eip": frozenset({"domain", "networkBorderGroup"}),
    "aws:ec2/routeTable:RouteTable": frozenset({"vpcId"}),
    "aws:ec2/route:Route": frozenset({"routeTableId", "destinationCidrBlock", "destinationIpv6CidrBlock"}),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": frozenset({"subnetId", "gatewayId"}),
    "aws:ec2/securityGroup:SecurityGroup": frozenset({"name", "namePrefix", "vpcId", "description"}),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": frozenset({"securityGroupId"}),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": frozenset({"securityGroupId"}),
    "aws:ec2/vpcEndpoint:VpcEndpoint": frozenset({"vpcId", "serviceName", "vpcEndpointType"}),
    "aws:ec2/flowLog:FlowLog": frozenset({"vpcId", "logDestination", "logDestinationType", "trafficType",
                                          "iamRoleArn", "maxAggregationInterval"}),
    "aws:ec2/launchTemplate:LaunchTemplate": frozenset({"name", "namePrefix"}),
    "aws:rds/instance:Instance": frozenset({"engine", "identifier", "identifierPrefix", "dbName", "username",
                                            "kmsKeyId", "storageEncrypted", "availabilityZone",
                                            "characterSetName", "timezone"}),
    "aws:rds/cluster:Cluster": frozenset({"engine", "clusterIdentifier", "clusterIdentifierPrefix", "databaseName",
                                          "masterUsername", "kmsKeyId", "storageEncrypted", "availabilityZones"}),
    "aws:rds/subnetGroup:SubnetGroup": frozenset({"name", "namePrefix"}),
    "aws:rds/parameterGroup:ParameterGroup": frozenset({"name", "namePrefix", "family"}),
    "aws:eks/cluster:Cluster": frozenset({"name", "roleArn", "vpcConfig.subnetIds", "kubernetesNetworkConfig",
                                          "outpostConfig"}),
    "eks:index:Cluster": frozenset({"name", "subnetIds", "privateSubnetIds", "publicSubnetIds", "vpcId",
                                    "serviceRole", "kubernetesServiceIpAddressRange", "ipFamily"}),
    "aws:eks/nodeGroup:NodeGroup": frozenset({"clusterName", "nodeGroupName", "nodeGroupNamePrefix", "nodeRoleArn",
                                              "subnetIds", "instanceTypes", "capacityType", "amiType", "diskSize",
                                              "remoteAccess"}),
    "eks:index:ManagedNodeGroup": frozenset({"cluster", "clusterName", "nodeGroupName", "nodeGroupNamePrefix",
                                             "nodeRole", "nodeRoleArn", "subnetIds", "instanceTypes", "capacityType",
                                             "amiType", "diskSize", "remoteAccess"}),
    "aws:eks/addon:Addon": frozenset({"clusterName", "addonName"}),
    "aws:s3/bucket:Bucket": frozenset({"bucket", "bucketPrefix", "objectLockEnabled"}),
    "aws:ecr/repository:Repository": frozenset({"name", "encryptionConfigurations"}),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": frozenset({"repository"}),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": frozenset({"bucket"}),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": frozenset(
        {"bucket", "expectedBucketOwner"}),
    "aws:s3/bucketVersioning:BucketVersioning": frozenset({"bucket", "expectedBucketOwner"}),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": frozenset({"bucket", "expectedBucketOwner"}),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": frozenset({"bucket"}),
    "aws:s3/bucketPolicy:BucketPolicy": frozenset({"bucket"}),
    "aws:kms/key:Key": frozenset({"customerMasterKeySpec", "keyUsage", "multiRegion", "keySpec"}),
    "aws:kms/alias:Alias": frozenset({"name", "namePrefix"}),
    "aws:iam/role:Role": frozenset({"name", "namePrefix", "path"}),
    "aws:iam/rolePolicy:RolePolicy": frozenset({"name", "namePrefix", "role"}),
    "aws:iam/policy:Policy": frozenset({"name", "namePrefix", "path"}),
    "aws:cloudwatch/logGroup:LogGroup": frozenset({"name", "namePrefix", "logGroupClass"}),
    "kubernetes:helm.sh/v3:Release": frozenset({"name", "namespace"}),
    "kubernetes:apps/v1:Deployment": frozenset({"spec.selector"}),
    "kubernetes:apps/v1:StatefulSet": frozenset({"spec.selector", "spec.serviceName", "spec.volumeClaimTemplates"}),
    "kubernetes:apps/v1:DaemonSet": frozenset({"spec.selector"}),
    "kubernetes:batch/v1:Job": frozenset({"spec.template", "spec.selector", "spec.completions", "spec.completionMode"}),
}
# Every Kubernetes object is replaced when its name or namespace changes; a provider when its region does.
K8S_IDENTITY = frozenset({"metadata.name", "metadata.namespace"})
PROVIDER_REPLACE = frozenset({"region"})


def replace_paths(type_: str) -> frozenset[str]:
    """The property paths of ``type_`` that force a replacement."""
    if type_.startswith("kubernetes:") and type_ != "kubernetes:helm.sh/v3:Release":
        return REPLACE_ON_CHANGE.get(type_, frozenset()) | K8S_IDENTITY
    if type_.startswith("pulumi:providers:"):
        return PROVIDER_REPLACE
    return REPLACE_ON_CHANGE.get(type_, frozenset())


def forces_replacement(type_: str, path: str) -> bool:
    """Whether changing ``path`` (e.g. ``vpcConfig.subnetIds[1]``) of a ``type_`` replaces the resource."""
    return any(path == p or path.startswith((p + ".", p + "[")) for p in replace_paths(type_))


@dataclass(frozen=True)
class PropertyChange:
    """One property that differs: its path, both values (None when absent), and whether it replaces."""

    path: str
    before: Any
    after: Any
    replaces: bool

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {"path": self.path, "before": self.before, "after": self.after, "replaces": self.replaces}


@dataclass(frozen=True)
class ResourceChange:
    """A resource present in both renders whose inputs or guard options differ."""

    urn: str
    type: str
    name: str
    changes: tuple[PropertyChange, ...]
    protected: bool

    @property
    def replaces(self) -> bool:
        """Whether any change forces the resource to be replaced."""
        return any(c.replaces for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {"urn": self.urn, "type": self.type, "name": self.name, "replace": self.replaces,
                "protected": self.protected, "changes": [c.to_json() for c in self.changes]}


@dataclass(frozen=True)
class ResourceRef:
    """An added or removed resource."""

    urn: str
    type: str
    name: str
    protected: bool = False

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {"urn": self.urn, "type": self.type, "name": self.name, "protected": self.protected}


@dataclass
class StackDiff:
    """Everything that differs between a base and a head render of one stack."""

    stack: str
    added: list[ResourceRef] = field(default_factory=list)
    removed: list[ResourceRef] = field(default_factory=list)
    changed: list[ResourceChange] = field(default_factory=list)
    unchanged: int = 0

    @property
    def replaced(self) -> list[ResourceChange]:
        """Changed resources that will be replaced."""
        return [c for c in self.changed if c.replaces]

    @property
    def empty(self) -> bool:
        """Whether nothing differs."""
        return not (self.added or self.removed or self.changed)

    @property
    def blocked(self) -> list[str]:
        """Names of protected resources this change would delete or replace (``pulumi up`` refuses)."""
        return sorted({r.name for r in self.removed if r.protected} | {c.name for c in self.replaced if c.protected})

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "stack": self.stack,
            "summary": {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed),
                        "replaced": len(self.replaced), "unchanged": self.unchanged},
            "blocked_by_protect": self.blocked,
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
    elif (isinstance(before, list) and isinstance(after, list) and len(before) == len(after)
          and any(isinstance(v, Mapping | list) for v in before + after)):
        for index, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _walk(b, a, f"{path}[{index}]")
    elif before != after:
        yield path, before, after


GUARD_OPTIONS = ("protect", "retain_on_delete", "delete_before_replace", "ignore_changes")


def _record_changes(type_: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[PropertyChange]:
    changes = [PropertyChange(p, b, a, forces_replacement(type_, p))
               for p, b, a in _walk(before.get("inputs") or {}, after.get("inputs") or {}, "")]
    b_opts, a_opts = before.get("options") or {}, after.get("options") or {}
    for option in GUARD_OPTIONS:
        if b_opts.get(option) != a_opts.get(option):
            changes.append(PropertyChange(f"options.{option}", b_opts.get(option), a_opts.get(option), False))
    # Moving a resource to another provider instance makes Pulumi replace it (the old provider deletes it).
    if b_opts.get("provider") != a_opts.get("provider") and not type_.startswith("pulumi:providers:"):
        changes.append(PropertyChange("options.provider", b_opts.get("provider"), a_opts.get("provider"), True))
    return changes


def _ref(record: Mapping[str, Any]) -> ResourceRef:
    protected = bool((record.get("options") or {}).get("protect"))
    return ResourceRef(record["urn"], record["type"], record["name"], protected)


def diff_renders(base: Mapping[str, Any], head: Mapping[str, Any]) -> StackDiff:
    """What changes from ``base`` to ``head`` (two ``Render.to_json()`` documents of one stack)."""
    # The stack resource itself carries nothing a reviewer needs.
    def index(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        return {r["urn"]: r for r in doc.get("resources") or [] if r["type"] != "pulumi:pulumi:Stack"}

    old, new = index(base), index(head)
    result = StackDiff(stack=str(head.get("stack") or base.get("stack") or "?"))
    result.added = [_ref(new[u]) for u in sorted(new.keys() - old.keys())]
    result.removed = [_ref(old[u]) for u in sorted(old.keys() - new.keys())]
    for urn in sorted(old.keys() & new.keys()):
        changes = _record_changes(new[urn]["type"], old[urn], new[urn])
        if changes:
            protected = bool((old[urn].get("options") or {}).get("protect"))
            result.changed.append(ResourceChange(urn, new[urn]["type"], new[urn]["name"], tuple(changes), protected))
        else:
            result.unchanged += 1
    return result


# ----------------------------------------------------------------------------------------------------------
# Markdown

MAX_VALUE = 60


def _show(value: Any) -> str:
    if value is None:
        return "_(none)_"
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    text = text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def to_markdown(diff: StackDiff) -> str:
    """A Markdown section for a PR comment."""
    head = f"### Infrastructure diff: `{diff.stack}`\n\n"
    if diff.empty:
        return head + f"No changes ({diff.unchanged} resources unchanged).\n"
    lines = [head + f"**{len(diff.added)} to add, {len(diff.changed)} to change "
             f"({len(diff.replaced)} replaced), {len(diff.removed)} to delete**, {diff.unchanged} unchanged.\n"]
    if diff.blocked:
        lines.append("> [!WARNING]\n> Deletes or replaces protected resources: "
                     + ", ".join(f"`{n}`" for n in diff.blocked) + ". `pulumi up` will refuse; add `aliases` or "
                     "revert the change.\n")
    if diff.replaced:
        lines.append("> [!CAUTION]\n> Replaced (delete and re-create): "
                     + ", ".join(f"`{c.name}`" for c in diff.replaced) + "\n")
    if diff.added or diff.removed:
        rows = ["| | resource | type |", "|---|---|---|"]
        rows += [f"| + add | `{r.name}` | {r.type} |" for r in sorted(diff.added, key=_by_type)]
        rows += [f"| - delete | `{r.name}`{' (protected)' if r.protected else ''} | {r.type} |"
                 for r in sorted(diff.removed, key=_by_type)]
        lines += _fold(rows, f"{len(diff.added)} added, {len(diff.removed)} deleted")
    if diff.changed:
        rows = ["| | resource | property | before | after |", "|---|---|---|---|---|"]
        for change in diff.changed:
            action = "**± replace**" if change.replaces else "~ update"
            for prop in change.changes:
                flag = " **(forces replacement)**" if prop.replaces else ""
                rows.append(f"| {action} | `{change.name}` | `{prop.path}`{flag} | {_show(prop.before)} "
                            f"| {_show(prop.after)} |")
        lines += _fold(rows, f"{len(diff.changed)} changed")
    return "\n".join(lines)


FOLD_ROWS = 20


def _by_type(ref: ResourceRef) -> tuple[str, str]:
    return ref.type, ref.name


def _fold(rows: list[str], summary: str) -> list[str]:
    """A table, folded into <details> when long, so a PR comment stays readable."""
    if len(rows) - 2 <= FOLD_ROWS:
        return [*rows, ""]
    return [f"<details><summary>{summary}</summary>\n", *rows, "\n</details>\n"]


# ----------------------------------------------------------------------------------------------------------
# Rendering a git ref


class RefRenderError(RuntimeError):
    """A git ref could not be unpacked or its stack could not be rendered."""


class StackMissingAtRef(RefRenderError):
    """The stack has no ``Pulumi.<stack>.yaml`` at the ref (a stack the change adds or removes)."""


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


def unpack_ref(repo: Path, ref: str, into: Path) -> None:
    """Write the tree of ``ref`` into ``into`` (no checkout: the work tree is untouched)."""
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
    archive = into / "ref.tar"
    archive.write_bytes(_git(repo, "archive", "--format=tar", commit))
    with tarfile.open(archive) as tar:
        tar.extractall(into / "src", filter="data")
    archive.unlink()


def _package_links(src: Path, into: Path) -> Path:
    """A folder where ``mlplat/<pkg>`` points at the ref's folders, per its pyproject's package-dir."""
    pyproject = src / "pyproject.toml"
    mapping: Mapping[str, str] = {}
    if pyproject.exists():
        mapping = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {}).get("package-dir", {})
    root = into / "pkgs"
    (root / "mlplat").mkdir(parents=True)
    for package, folder in mapping.items():
        if package.startswith("mlplat.") and package.count(".") == 1 and (src / folder).is_dir():
            (root / "mlplat" / package.split(".", 1)[1]).symlink_to(src / folder, target_is_directory=True)
    return root


def render_ref(repo: Path, ref: str, stack: str, project_subdir: str = ".", timeout: float = 300) -> dict[str, Any]:
    """Render ``stack`` as it is at git ``ref``: the ref's stack files and program, in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="mlplat-diff-") as tmp:
        where = Path(tmp)
        unpack_ref(repo, ref, where)
        project = where / "src" / project_subdir
        if not (project / f"Pulumi.{stack}.yaml").exists():
            raise StackMissingAtRef(f"stack {stack!r} does not exist at {ref} (no Pulumi.{stack}.yaml)")
        pkgs = _package_links(where / "src", where)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pkgs), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(
            [sys.executable, "-m", "mlplat.infra.cli", "synth", stack, "--format", "json", "-C", str(project)],
            capture_output=True, text=True, env=env, cwd=project, timeout=timeout, check=False,
        )
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise RefRenderError(f"rendering {stack!r} at {ref} failed: " + " / ".join(tail))
        try:
            document: dict[str, Any] = json.loads(done.stdout)
        except ValueError as exc:
            raise RefRenderError(f"rendering {stack!r} at {ref} printed no JSON render ({exc})") from exc
        return document
