"""Golden files of the PR comment (`mlplat diff`'s Markdown) for representative changes to the production stack.

The base is a saved production render (``golden/production.base.json``), so the goldens change only when the
comment's format or the diff's logic does, not when a component does; each head is the base with one change,
as the program would render it. ``UPDATE_GOLDEN=1 pytest tests/infra/test_diff_golden.py`` rewrites them;
review the diff of the .md files like any other change.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlplat.review.cost import diff_costs, estimate_or_unpriced
from mlplat.review.diff import diff_renders, to_markdown

GOLDEN = Path(__file__).parent / "golden"
BASE: dict[str, Any] = json.loads((GOLDEN / "production.base.json").read_text())
SOURCES = (
    "**base:** `origin/main` at `0123456789ab`, rendered with that commit's own code",
    "**head:** the working tree (HEAD `0123456789ab` plus uncommitted changes), rendered with its own code",
)


def _each(doc: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r for r in doc["resources"] if r["type"] == type_]


def cidr_change(doc: dict[str, Any]) -> None:
    for record in _each(doc, "aws:ec2/vpc:Vpc") + _each(doc, "aws:ec2/subnet:Subnet"):
        record["inputs"]["cidrBlock"] = record["inputs"]["cidrBlock"].replace("10.20.", "10.30.")


def rds_class(cls: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        _each(doc, "aws:rds/instance:Instance")[0]["inputs"]["instanceClass"] = cls

    return change


def bucket_physical_rename(doc: dict[str, Any]) -> None:
    _each(doc, "aws:s3/bucket:Bucket")[0]["inputs"]["bucket"] = "mlplat-production-models"


def bucket_logical_rename(doc: dict[str, Any]) -> None:
    bucket = _each(doc, "aws:s3/bucket:Bucket")[0]
    bucket["urn"] = bucket["urn"].replace("::mlplat-production-artifacts", "::mlplat-production-models")
    bucket["name"] = "mlplat-production-models"


def instance_type_outside_table(doc: dict[str, Any]) -> None:
    group = next(r for r in _each(doc, "aws:eks/nodeGroup:NodeGroup") if r["name"].endswith("-cpu"))
    group["inputs"]["instanceTypes"] = ["c7i.xlarge"]  # a component user may name any type; the table lacks it


def service_removal(doc: dict[str, Any]) -> None:
    doc["resources"] = [r for r in doc["resources"] if "mlplat:serving:ModelService" not in r["urn"]]


def code_deletes_protected_database(doc: dict[str, Any]) -> None:
    doc["resources"] = [r for r in doc["resources"] if r["type"] != "aws:rds/instance:Instance"]


def iam_policy_edit(doc: dict[str, Any]) -> None:
    policy = next(r for r in _each(doc, "aws:iam/rolePolicy:RolePolicy") if r["name"].endswith("write-mlflow"))
    document = json.loads(policy["inputs"]["policy"])
    statement = document["Statement"][0]
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    statement["Action"] = [*actions, "s3:DeleteBucket"]
    policy["inputs"]["policy"] = json.dumps(document)


CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "cidr-change": cidr_change,
    "rds-class-up": rds_class("db.r6g.xlarge"),  # the config refuses it; a ref's own older code need not have
    "rds-class-down": rds_class("db.t4g.medium"),
    "bucket-rename-physical": bucket_physical_rename,
    "bucket-rename-logical": bucket_logical_rename,
    "instance-type-outside-table": instance_type_outside_table,
    "service-removal": service_removal,
    "code-deletes-protected-database": code_deletes_protected_database,
    "iam-policy-edit": iam_policy_edit,
}


def comment(case: str) -> str:
    head = copy.deepcopy(BASE)
    CASES[case](head)
    costs = diff_costs(estimate_or_unpriced(BASE), estimate_or_unpriced(head))
    assert costs is not None
    return to_markdown(diff_renders(BASE, head), SOURCES) + "\n" + costs.markdown()


@pytest.mark.parametrize("case", sorted(CASES))
def test_comment_matches_its_golden_file(case: str) -> None:
    path = GOLDEN / f"{case}.md"
    text = comment(case)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


def test_cidr_change_cascades_to_the_cluster_node_groups_and_nat_gateways() -> None:
    head = copy.deepcopy(BASE)
    cidr_change(head)
    change = diff_renders(BASE, head)
    replaced = {c.type for c in change.replaced}
    assert {
        "eks:index:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/securityGroup:SecurityGroup",
        "kubernetes:apps/v1:Deployment",
    } <= replaced
    # the database's security group is replaced, so the database itself is updated (in place), never unchanged
    database = next(c for c in change.changed if c.type == "aws:rds/instance:Instance")
    assert not database.replaces and all(p.cause for p in database.changes)
    assert change.blocked == ["mlplat-production-eks"]  # deletion protection on the cluster


def test_rds_upsize_outside_the_price_table_is_not_a_saving() -> None:
    text = comment("rds-class-up")
    assert "**Cost (incomplete):**" in text and "(-$" not in text
    assert "no RDS price for 'db.r6g.xlarge'" in text


def test_iam_policy_edit_shows_the_whole_document_with_the_added_action() -> None:
    text = comment("iam-policy-edit")
    assert '+        "s3:DeleteBucket"' in text  # the whole document, pretty-printed, the added action marked
    assert "…" not in text


def test_physical_and_logical_bucket_renames_get_different_advice() -> None:
    physical, logical = comment("bucket-rename-physical"), comment("bucket-rename-logical")
    assert "`aliases` cannot help" in physical and "add `aliases" not in physical
    assert "add `aliases=[pulumi.Alias(...)]`" in logical


def test_a_deleted_service_is_at_the_top_and_never_folded() -> None:
    text = comment("service-removal")
    top = text.split("#### Deleted")[0]
    assert "#### Data and live services at risk" in top
    assert "| **delete** | `mlplat-production-digits` | `mlplat:serving:ModelService` | model service |" in top
    assert "<details>" not in top
