"""The CrossGuard pack, served as Pulumi runs it (``python policy/__main__.py`` answering the analyzer gRPC
protocol on 127.0.0.1), fed resources the way the Pulumi engine sends them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from mlplat.infra.engine import Render
from mlplat.policy import pack
from mlplat.policy.check import check_render
from mlplat.policy.rules import RULES

PACK = Path(__file__).resolve().parents[2] / "policy"
TAGS = {"project": "mlplat", "owner": "me", "cost-center": "ml"}


def _start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], analyzer_pb2_grpc.AnalyzerStub]:
    proc = subprocess.Popen(
        [sys.executable, str(PACK / "__main__.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "the policy pack did not print its port within 60 s"
    port = int(proc.stdout.readline())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return proc, analyzer_pb2_grpc.AnalyzerStub(channel)


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    env = {k: v for k, v in os.environ.items() if k != "MLPLAT_ENVIRONMENT"}
    proc, stub = _start(env)
    try:
        yield stub
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    json_format.ParseDict(value, s)
    return s


def _provider(environment: str) -> analyzer_pb2.AnalyzerProviderResource:
    # The engine hands a provider's object inputs JSON-encoded, as it does for real.
    tags = json.dumps({"tags": {**TAGS, "environment": environment}})
    return analyzer_pb2.AnalyzerProviderResource(
        type="pulumi:providers:aws",
        name="aws",
        urn="urn:pulumi:s::p::aws",
        properties=_struct({"region": "us-east-1", "defaultTags": tags}),
    )


def analyze(
    stub: analyzer_pb2_grpc.AnalyzerStub,
    type_: str,
    props: dict[str, Any],
    environment: str = "production",
    name: str = "r",
) -> list[tuple[str, str, str]]:
    request = analyzer_pb2.AnalyzeRequest(
        type=type_,
        properties=_struct(props),
        name=name,
        urn=f"urn:pulumi:s::p::{type_}::{name}",
        provider=_provider(environment),
    )
    return [
        (d.policyName, analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel), d.message)
        for d in stub.Analyze(request).diagnostics
    ]


def analyze_stack(
    stub: analyzer_pb2_grpc.AnalyzerStub, records: list[dict[str, Any]], environment: str = "production"
) -> list[tuple[str, str, str]]:
    resources = [
        analyzer_pb2.AnalyzerResource(
            type=r["type"],
            name=r["name"],
            urn=r["urn"],
            properties=_struct(r.get("inputs") or {}),
            dependencies=(r.get("options") or {}).get("depends_on") or [],
            provider=_provider(environment),
        )
        for r in records
    ]
    response = stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources))
    return [(d.policyName, d.urn, d.message) for d in response.diagnostics]


def test_pack_serves_a_policy_per_rule_and_level(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    levels = {p.name: analyzer_pb2.EnforcementLevel.Name(p.enforcementLevel) for p in info.policies}
    assert info.name == "mlplat"
    for rule in RULES:
        assert levels[f"mlplat-{rule.id}"] == rule.levels.production.upper()
        if rule.levels.default != rule.levels.production:
            assert levels[f"mlplat-{rule.id}-advisory"] == "ADVISORY"
    assert len(levels) == len(RULES) + sum(r.levels.default != r.levels.production for r in RULES)


GOOD_DB = {
    "storageEncrypted": True,
    "publiclyAccessible": False,
    "backupRetentionPeriod": 7,
    "multiAz": True,
    "deletionProtection": True,
}


def test_mandatory_violation_names_problem_and_fix(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    ((policy, level, message),) = analyze(analyzer, "aws:rds/instance:Instance", {**GOOD_DB, "storageEncrypted": False})
    assert (policy, level) == ("mlplat-rds-encrypted", "MANDATORY")
    # CrossGuard prefixes the policy's description; then our problem and fix
    assert message.endswith(
        "\nstorage is not encrypted. Fix: set storageEncrypted=true (and kmsKeyId for a customer key)"
    )


def test_levels_follow_the_providers_environment_tag(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    single_az = {**GOOD_DB, "multiAz": False}
    assert [f[:2] for f in analyze(analyzer, "aws:rds/instance:Instance", single_az)] == [
        ("mlplat-rds-multi-az", "MANDATORY")
    ]
    assert [f[:2] for f in analyze(analyzer, "aws:rds/instance:Instance", single_az, environment="dev")] == [
        ("mlplat-rds-multi-az-advisory", "ADVISORY")
    ]


def test_passing_resource_has_no_diagnostics(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    assert analyze(analyzer, "aws:rds/instance:Instance", GOOD_DB) == []
    template = {"metadataOptions": {"httpTokens": "required"}}
    assert analyze(analyzer, "aws:ec2/launchTemplate:LaunchTemplate", template) == []


def test_stack_policies_link_bucket_companions_by_dependency(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    bucket = {"urn": "urn:pulumi:s::p::aws:s3/bucket:Bucket::data", "type": "aws:s3/bucket:Bucket", "name": "data"}
    pab = {
        "urn": "urn:pulumi:s::p::pab",
        "type": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "name": "data-pab",
        "options": {"depends_on": [bucket["urn"]]},
        "inputs": {
            "blockPublicAcls": True,
            "blockPublicPolicy": True,
            "ignorePublicAcls": True,
            "restrictPublicBuckets": True,
        },
    }
    found = {(name, urn) for name, urn, _ in analyze_stack(analyzer, [bucket, pab])}
    assert found == {("mlplat-s3-encrypted", bucket["urn"]), ("mlplat-s3-tls-only", bucket["urn"])}
    unknown_policy = {
        "urn": "urn:pulumi:s::p::pol",
        "type": "aws:s3/bucketPolicy:BucketPolicy",
        "name": "pol",
        "options": {"depends_on": [bucket["urn"]]},
        "inputs": {"policy": UNKNOWN_STRING_VALUE},
    }
    names = {name for name, _, _ in analyze_stack(analyzer, [bucket, pab, unknown_policy])}
    assert "mlplat-s3-tls-only" not in names  # unknown during preview: not judged


def test_pack_and_mlplat_check_agree_on_a_broken_render(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, production_stack: Render
) -> None:
    document = production_stack.to_json()
    document["resources"] = [
        r for r in document["resources"] if r["type"] != "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ]
    for record in document["resources"]:
        if record["type"] == "aws:ecr/repository:Repository":
            record["inputs"]["imageScanningConfiguration"] = {"scanOnPush": False}
        if record["type"] == "aws:ec2/launchTemplate:LaunchTemplate":
            record["inputs"]["metadataOptions"] = {"httpTokens": "optional"}
    offline = {(f"mlplat-{f.rule}", f.urn) for f in check_render(document)}
    assert len(offline) >= 3
    served: set[tuple[str, str]] = set()
    records = [r for r in document["resources"] if r["type"] != "pulumi:pulumi:Stack"]
    for record in records:
        if record["type"].startswith("pulumi:providers:"):
            continue
        served |= {
            (name, record["urn"])
            for name, _, _ in analyze(analyzer, record["type"], record.get("inputs") or {}, name=record["name"])
        }
    served |= {(name, urn) for name, urn, _ in analyze_stack(analyzer, records)}

    # the resource-policy URNs were synthesized from type and name: compare by (policy, resource name)
    def by_name(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(policy, urn.rsplit("::", 1)[-1]) for policy, urn in pairs}

    assert by_name(served) == by_name(offline)


def test_plain_turns_proxies_into_data_and_unknowns_into_the_sentinel() -> None:
    proxied = unknown_checking_proxy({"a": [1, {"b": UNKNOWN_STRING_VALUE}], "c": "x"})
    assert pack.plain(proxied) == {"a": [1, {"b": pack.UNKNOWN}], "c": "x"}


def test_environment_falls_back_to_the_variable_then_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPLAT_ENVIRONMENT", raising=False)
    assert pack.environment({}) == "production"
    monkeypatch.setenv("MLPLAT_ENVIRONMENT", "dev")
    assert pack.environment({}) == "dev"
    assert pack.environment({"environment": "staging"}) == "staging"


def test_contract_rules_are_served_as_stack_policies(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, production_stack: Render
) -> None:
    document = production_stack.to_json()
    for record in document["resources"]:
        if record["type"] == "eks:index:Cluster":
            del record["inputs"]["storageClasses"]["gp3"]["metadata"]  # auto-named: PVCs naming gp3 stay Pending
    records = [r for r in document["resources"] if r["type"] != "pulumi:pulumi:Stack"]
    served = {(name, urn.rsplit("::", 1)[-1]) for name, urn, _ in analyze_stack(analyzer, records)}
    assert served == {("mlplat-contract-ref-storage-class", "mlplat-production-monitoring-stack")}
    assert {
        (f"mlplat-{f.rule}", f.resource) for f in check_render(document) if f.rule.startswith("contract-")
    } == served
