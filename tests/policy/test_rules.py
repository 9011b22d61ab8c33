"""mlplat's policy rules: a violating and a passing fixture per rule, the real SDK's property names through the
offline engine, the shipped stacks, and `mlplat check` end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pytest
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.infra.engine import Render
from mlplat.policy.check import check_render, check_resources, has_mandatory, to_markdown
from mlplat.policy.framework import Finding, Resource, environment_of
from mlplat.policy.rules import RULES, RULES_BY_ID
from mlplat.policy.rules.workloads import image_is_pinned

runner = CliRunner()
TAGS = {"project": "mlplat", "environment": "dev", "owner": "me", "cost-center": "ml"}


def res(
    type_: str, name: str = "r", deps: tuple[str, ...] = (), default_tags: dict[str, str] | None = None, **inputs: Any
) -> Resource:
    """An inline resource: URN derived from type and name, provider default tags complete by default."""
    return Resource(
        urn=f"urn:{type_}::{name}",
        type=type_,
        name=name,
        inputs=inputs,
        dependencies=frozenset(deps),
        provider_default_tags=TAGS if default_tags is None else default_tags,
    )


def findings(rule_id: str, *resources: Resource, environment: str = "production") -> list[Finding]:
    return check_resources(list(resources), environment, [RULES_BY_ID[rule_id]])


# ---------------------------------------------------------------------------------------------------- S3

BUCKET = "aws:s3/bucket:Bucket"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ALL_FLAGS: dict[str, Any] = {
    "blockPublicAcls": True,
    "blockPublicPolicy": True,
    "ignorePublicAcls": True,
    "restrictPublicBuckets": True,
}
TLS_ONLY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
)


def test_public_access_block_needs_all_four_flags() -> None:
    bad = findings("s3-public-access-block-complete", res(PAB, **{**ALL_FLAGS, "restrictPublicBuckets": False}))
    assert [f.problem for f in bad] == ["public access block leaves restrictPublicBuckets off"]
    assert bad[0].enforcement == "mandatory" and "true" in bad[0].fix
    assert findings("s3-public-access-block-complete", res(PAB, **ALL_FLAGS)) == []


def test_public_canned_acl_is_refused() -> None:
    assert findings("s3-no-public-acl", res(BUCKET, acl="public-read"))[0].rule == "s3-no-public-acl"
    assert findings("s3-no-public-acl", res(BUCKET, acl="private")) == []


def test_bucket_without_public_access_block_is_found_and_linked_one_passes() -> None:
    bucket = res(BUCKET, "data")
    other = res(BUCKET, "other")
    pab = res(PAB, "data-pab", deps=(bucket.urn,), **ALL_FLAGS)
    found = findings("s3-public-access-blocked", bucket, other, pab)
    assert [f.resource for f in found] == ["other"]
    assert findings("s3-public-access-blocked", bucket, pab) == []


def test_bucket_without_encryption_is_found_inline_or_separate_config_passes() -> None:
    bucket = res(BUCKET, "data")
    assert findings("s3-encrypted", bucket)[0].problem == "bucket has no server-side encryption configuration"
    sse = res(
        SSE, "data-sse", deps=(bucket.urn,), rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]
    )
    assert findings("s3-encrypted", bucket, sse) == []
    inline = res(
        BUCKET,
        "inline",
        serverSideEncryptionConfiguration={"rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}},
    )
    assert findings("s3-encrypted", inline) == []


def test_s3_managed_key_is_advisory_in_dev_and_mandatory_in_production() -> None:
    sse = res(SSE, rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}])
    assert [f.enforcement for f in findings("s3-encryption-kms", sse, environment="dev")] == ["advisory"]
    assert [f.enforcement for f in findings("s3-encryption-kms", sse)] == ["mandatory"]
    kms = res(SSE, rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}])
    assert findings("s3-encryption-kms", kms) == []


def test_bucket_needs_a_policy_that_denies_insecure_transport() -> None:
    bucket = res(BUCKET, "data")
    allow_all = res(
        POLICY,
        "p",
        deps=(bucket.urn,),
        policy=json.dumps(
            {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}
        ),
    )
    assert [f.rule for f in findings("s3-tls-only", bucket, allow_all)] == ["s3-tls-only"]
    tls = res(POLICY, "p", deps=(bucket.urn,), policy=TLS_ONLY)
    assert findings("s3-tls-only", bucket, tls) == []


# ---------------------------------------------------------------------------------------------------- RDS

RDS = "aws:rds/instance:Instance"
GOOD_DB: dict[str, Any] = {
    "storageEncrypted": True,
    "publiclyAccessible": False,
    "backupRetentionPeriod": 7,
    "multiAz": True,
    "deletionProtection": True,
}


@pytest.mark.parametrize(
    ("rule", "bad_inputs", "problem"),
    [
        ("rds-encrypted", {"storageEncrypted": False}, "storage is not encrypted"),
        ("rds-not-public", {"publiclyAccessible": True}, "the database has a public endpoint"),
        ("rds-backup-retention", {"backupRetentionPeriod": 3}, "backup retention is 3 day(s)"),
        ("rds-multi-az", {"multiAz": False}, "the instance has no standby in a second availability zone"),
        ("rds-deletion-protection", {"deletionProtection": False}, "deletion protection is off"),
    ],
)
def test_rds_rules(rule: str, bad_inputs: dict[str, Any], problem: str) -> None:
    assert [f.problem for f in findings(rule, res(RDS, **{**GOOD_DB, **bad_inputs}))] == [problem]
    assert findings(rule, res(RDS, **GOOD_DB)) == []


def test_rds_unset_backup_retention_means_the_aws_default_of_one_day() -> None:
    inputs = {k: v for k, v in GOOD_DB.items() if k != "backupRetentionPeriod"}
    assert "AWS default: 1 day" in findings("rds-backup-retention", res(RDS, **inputs))[0].problem


def test_multi_az_and_deletion_protection_are_only_advisory_outside_production() -> None:
    db = res(RDS, **{**GOOD_DB, "multiAz": False, "deletionProtection": False})
    dev = check_resources([db], "dev", [RULES_BY_ID["rds-multi-az"], RULES_BY_ID["rds-deletion-protection"]])
    assert {f.enforcement for f in dev} == {"advisory"} and not has_mandatory(dev)
    prod = check_resources([db], "production", [RULES_BY_ID["rds-multi-az"], RULES_BY_ID["rds-deletion-protection"]])
    assert {f.enforcement for f in prod} == {"mandatory"} and has_mandatory(prod)


# ---------------------------------------------------------------------------------------------------- EKS

EKS = "eks:index:Cluster"
AWS_EKS = "aws:eks/cluster:Cluster"
LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


def test_eks_secrets_encryption_both_cluster_flavours() -> None:
    assert findings("eks-secrets-encryption", res(EKS))[0].rule == "eks-secrets-encryption"
    assert findings("eks-secrets-encryption", res(EKS, encryptionConfigKeyArn="arn:aws:kms:k")) == []
    assert len(findings("eks-secrets-encryption", res(AWS_EKS, encryptionConfig={"resources": ["other"]}))) == 1
    ok = res(AWS_EKS, encryptionConfig={"resources": ["secrets"], "provider": {"keyArn": "k"}})
    assert findings("eks-secrets-encryption", ok) == []


def test_eks_control_plane_logs_must_include_api_audit_authenticator() -> None:
    bad = findings("eks-control-plane-logs", res(EKS, enabledClusterLogTypes=["api"]))
    assert bad[0].problem == "control-plane log types audit, authenticator are not enabled"
    assert findings("eks-control-plane-logs", res(EKS, enabledClusterLogTypes=LOGS)) == []


def test_eks_api_open_to_the_world_by_default_private_or_limited_passes() -> None:
    assert len(findings("eks-api-not-open", res(EKS))) == 1  # EKS defaults to a public endpoint for 0.0.0.0/0
    assert len(findings("eks-api-not-open", res(AWS_EKS, vpcConfig={"endpointPublicAccess": True}))) == 1
    assert findings("eks-api-not-open", res(EKS, endpointPublicAccess=False, endpointPrivateAccess=True)) == []
    assert findings("eks-api-not-open", res(EKS, publicAccessCidrs=["203.0.113.0/24"])) == []
    assert findings("eks-api-not-open", res(AWS_EKS, vpcConfig={"endpointPublicAccess": False})) == []
    assert findings("eks-api-not-open", res(EKS), environment="dev")[0].enforcement == "advisory"


# ---------------------------------------------------------------------------------------------------- EC2

LT = "aws:ec2/launchTemplate:LaunchTemplate"


def test_launch_templates_and_node_groups_require_imdsv2() -> None:
    assert (
        "httpTokens=optional"
        in findings("imdsv2-required", res(LT, metadataOptions={"httpTokens": "optional"}))[0].problem
    )
    assert len(findings("imdsv2-required", res(LT))) == 1
    assert findings("imdsv2-required", res(LT, metadataOptions={"httpTokens": "required"})) == []
    assert len(findings("imdsv2-required", res("eks:index:ManagedNodeGroup", instanceTypes=["m6i.large"]))) == 1
    assert findings("imdsv2-required", res("eks:index:ManagedNodeGroup", enableIMDSv2=True)) == []
    assert len(findings("imdsv2-required", res("aws:eks/nodeGroup:NodeGroup"))) == 1
    assert findings("imdsv2-required", res("aws:eks/nodeGroup:NodeGroup", launchTemplate={"id": "lt-1"})) == []


SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LB = "aws:lb/loadBalancer:LoadBalancer"


def test_open_ingress_is_refused_except_to_a_load_balancer_on_443() -> None:
    sg = res(SG, "web")
    https = res(INGRESS, "https", deps=(sg.urn,), cidrIpv4="0.0.0.0/0", ipProtocol="tcp", fromPort=443, toPort=443)
    # the same rule is a violation while no load balancer uses the group ...
    assert [f.resource for f in findings("no-open-ingress", sg, https)] == ["https"]
    # ... and fine once one does
    lb = res(LB, "alb", deps=(sg.urn,))
    assert findings("no-open-ingress", sg, https, lb) == []
    ssh = res(INGRESS, "ssh", deps=(sg.urn,), cidrIpv4="0.0.0.0/0", ipProtocol="tcp", fromPort=22, toPort=22)
    assert [f.problem for f in findings("no-open-ingress", sg, ssh, lb)] == ["ingress from 0.0.0.0/0 on ports 22-22"]
    vpc_only = res(INGRESS, "vpc", deps=(sg.urn,), cidrIpv4="10.0.0.0/16", ipProtocol="tcp", fromPort=22, toPort=22)
    assert findings("no-open-ingress", sg, vpc_only) == []


def test_open_ingress_inline_and_legacy_rules_and_ipv6() -> None:
    inline = res(SG, "inline", ingress=[{"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}])
    assert findings("no-open-ingress", inline)[0].problem == "ingress from 0.0.0.0/0 on all ports"
    sg = res(SG, "g")
    legacy = res(
        "aws:ec2/securityGroupRule:SecurityGroupRule",
        "legacy",
        deps=(sg.urn,),
        type="ingress",
        protocol="tcp",
        fromPort=5432,
        toPort=5432,
        ipv6CidrBlocks=["::/0"],
    )
    assert findings("no-open-ingress", sg, legacy)[0].problem == "ingress from ::/0 on ports 5432-5432"
    egress = res(
        "aws:ec2/securityGroupRule:SecurityGroupRule",
        "out",
        deps=(sg.urn,),
        type="egress",
        protocol="-1",
        fromPort=0,
        toPort=0,
        cidrBlocks=["0.0.0.0/0"],
    )
    assert findings("no-open-ingress", sg, egress) == []


# ---------------------------------------------------------------------------------------------------- ECR

ECR = "aws:ecr/repository:Repository"


def test_ecr_scan_on_push_and_immutable_tags() -> None:
    assert len(findings("ecr-scan-on-push", res(ECR, imageScanningConfiguration={"scanOnPush": False}))) == 1
    assert findings("ecr-scan-on-push", res(ECR, imageScanningConfiguration={"scanOnPush": True})) == []
    assert len(findings("ecr-immutable-tags", res(ECR))) == 1  # AWS default: MUTABLE
    assert findings("ecr-immutable-tags", res(ECR, imageTagMutability="IMMUTABLE")) == []


# ---------------------------------------------------------------------------------------------------- Kubernetes

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
JOB = "kubernetes:batch/v1:Job"
PROBE = {"httpGet": {"path": "/health", "port": 8080}}
GOOD_CONTAINER: dict[str, Any] = {
    "name": "server",
    "image": "123.dkr.ecr.us-east-1.amazonaws.com/serving:0.1.0",
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False},
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
    "readinessProbe": PROBE,
    "livenessProbe": PROBE,
}


def workload(type_: str = DEPLOYMENT, pod_context: dict[str, Any] | None = None, **container: Any) -> Resource:
    pod: dict[str, Any] = {"containers": [{**GOOD_CONTAINER, **container}]}
    if pod_context is not None:
        pod["securityContext"] = pod_context
    spec = {"template": {"spec": pod}}
    if type_ == "kubernetes:batch/v1:CronJob":
        spec = {"jobTemplate": {"spec": spec}}
    return res(type_, "w", spec=spec)


def test_good_workload_passes_every_kubernetes_rule() -> None:
    k8s_rules = [r for r in RULES if r.id.startswith("k8s-")]
    for kind in (DEPLOYMENT, JOB, "kubernetes:batch/v1:CronJob", "kubernetes:apps/v1:StatefulSet"):
        assert check_resources([workload(kind)], "production", k8s_rules) == [], kind


def test_root_containers_are_found_at_pod_or_container_level() -> None:
    no_context = workload(securityContext={"allowPrivilegeEscalation": False})
    assert findings("k8s-non-root", no_context)[0].problem == "container 'server' may run as root"
    assert findings(
        "k8s-non-root",
        workload(
            securityContext={"runAsUser": 0, "allowPrivilegeEscalation": False}, pod_context={"runAsNonRoot": True}
        ),
    )
    pod_level = workload(securityContext={"allowPrivilegeEscalation": False}, pod_context={"runAsNonRoot": True})
    assert findings("k8s-non-root", pod_level) == []


def test_privilege_escalation_and_privileged_containers() -> None:
    unset = workload(securityContext={"runAsNonRoot": True})
    assert findings("k8s-no-privilege-escalation", unset)[0].problem == "container 'server' allows privilege escalation"
    privileged = workload(securityContext={"runAsNonRoot": True, "privileged": True})
    assert findings("k8s-no-privilege-escalation", privileged)[0].problem == "container 'server' is privileged"
    assert findings("k8s-no-privilege-escalation", workload()) == []


def test_missing_resources_are_named() -> None:
    bad = findings("k8s-resources", workload(resources={"requests": {"cpu": "1"}}))
    assert bad[0].problem == "container 'server' has no requests.memory, limits.memory"
    assert findings("k8s-resources", workload()) == []


def test_probes_are_required_on_deployments_not_jobs() -> None:
    no_probes: dict[str, Any] = {"readinessProbe": None, "livenessProbe": None}
    assert len(findings("k8s-probes", workload(**no_probes))) == 1
    assert findings("k8s-probes", workload(**no_probes), environment="dev")[0].enforcement == "advisory"
    assert findings("k8s-probes", workload(JOB, **no_probes)) == []


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("nginx", False),
        ("nginx:latest", False),
        ("registry:5000/team/app", False),
        ("registry:5000/team/app:1.2", True),
        ("app:1.2.3", True),
        ("app@sha256:" + "a" * 64, True),
        ("app:latest@sha256:" + "b" * 64, True),
    ],
)
def test_image_pinning(image: str, pinned: bool) -> None:
    assert image_is_pinned(image) is pinned
    assert (findings("k8s-image-pinned", workload(image=image)) == []) is pinned


# ---------------------------------------------------------------------------------------------------- tags


def test_required_tags_merge_provider_defaults_under_resource_tags() -> None:
    vpc = "aws:ec2/vpc:Vpc"
    assert findings("required-tags", res(vpc, default_tags={}))[0].problem == (
        "missing tag(s) project, environment, owner, cost-center"
    )
    assert (
        findings(
            "required-tags",
            res(vpc, default_tags={"project": "p", "environment": "e"}, tags={"owner": "o", "cost-center": "c"}),
        )
        == []
    )
    assert findings("required-tags", res(vpc)) == []  # everything from the provider's default tags
    # a resource tag may override a default, and an empty value counts as missing
    assert findings("required-tags", res(vpc, tags={"owner": ""}))[0].problem == "missing tag(s) owner"


def test_untaggable_types_are_not_asked_for_tags() -> None:
    assert findings("required-tags", res("aws:ec2/routeTableAssociation:RouteTableAssociation", default_tags={})) == []
    assert findings("required-tags", res("kubernetes:core/v1:Namespace", default_tags={})) == []


# ---------------------------------------------------------------------------------------------------- the real SDK


def test_rules_read_the_sdk_property_names_of_a_rendered_program(render_program: Callable[..., Render]) -> None:
    """The rules' camelCase names are what pulumi-aws and pulumi-kubernetes put on the wire."""

    def program() -> None:
        provider = aws.Provider(
            "aws", region="us-east-1", default_tags=aws.ProviderDefaultTagsArgs(tags={"project": "mlplat"})
        )
        opts = pulumi.ResourceOptions(provider=provider)
        aws.rds.Instance(
            "db",
            engine="postgres",
            instance_class="db.t4g.micro",
            allocated_storage=20,
            storage_encrypted=True,
            publicly_accessible=True,
            backup_retention_period=1,
            multi_az=False,
            deletion_protection=False,
            opts=opts,
        )
        aws.ec2.LaunchTemplate(
            "nodes", metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(http_tokens="optional"), opts=opts
        )
        sg = aws.ec2.SecurityGroup("sg", vpc_id="vpc-1", opts=opts)
        aws.vpc.SecurityGroupIngressRule(
            "ssh",
            security_group_id=sg.id,
            cidr_ipv4="0.0.0.0/0",
            ip_protocol="tcp",
            from_port=22,
            to_port=22,
            opts=opts,
        )
        k8s.apps.v1.Deployment(
            "web",
            spec=k8s.apps.v1.DeploymentSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app": "web"}),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels={"app": "web"}),
                    spec=k8s.core.v1.PodSpecArgs(containers=[k8s.core.v1.ContainerArgs(name="web", image="nginx")]),
                ),
            ),
        )

    document = render_program(program, config={"aws:region": "us-east-1"}).to_json()
    found = {(f.rule, f.resource) for f in check_render(document, "production")}
    assert {
        ("rds-not-public", "db"),
        ("rds-backup-retention", "db"),
        ("rds-multi-az", "db"),
        ("rds-deletion-protection", "db"),
        ("imdsv2-required", "nodes"),
        ("no-open-ingress", "ssh"),
        ("k8s-non-root", "web"),
        ("k8s-no-privilege-escalation", "web"),
        ("k8s-resources", "web"),
        ("k8s-probes", "web"),
        ("k8s-image-pinned", "web"),
        ("required-tags", "db"),
    } <= found
    assert ("rds-encrypted", "db") not in found
    # the ingress rule's default tags came from the provider: only the three missing ones are reported
    tags = [f for f in check_render(document, "production") if f.rule == "required-tags" and f.resource == "sg"]
    assert tags[0].problem == "missing tag(s) environment, owner, cost-center"


# ---------------------------------------------------------------------------------------------------- shipped stacks


@pytest.mark.parametrize("stack_fixture", ["dev_stack", "production_stack"])
def test_shipped_stacks_pass_every_mandatory_rule(stack_fixture: str, request: pytest.FixtureRequest) -> None:
    stack: Render = request.getfixturevalue(stack_fixture)
    document = stack.to_json()
    assert environment_of(document) == stack.stack
    mandatory = [f for f in check_render(document) if f.enforcement == "mandatory"]
    assert mandatory == [], "\n".join(f"{f.rule} {f.resource}: {f.problem}" for f in mandatory)


def test_shipped_production_bucket_is_seen_by_the_s3_rules(production_stack: Render) -> None:
    """Guard against the rules passing vacuously: removing the TLS policy from the render is caught."""
    document = production_stack.to_json()
    document["resources"] = [r for r in document["resources"] if r["type"] != POLICY]
    assert [f.rule for f in check_render(document)] == ["s3-tls-only", "tracking-ingress-tls"]


# ---------------------------------------------------------------------------------------------------- CLI


def test_check_cli_passes_production_and_prints_json(tmp_path: Path, production_stack: Render) -> None:
    # The shipped production stack exposes MLflow through an internal ALB without a certificate (the operator's
    # ACM certificate is not in this repository): the one advisory finding, which does not fail the check.
    result = runner.invoke(app, ["check", "production"])
    assert result.exit_code == 0, result.output
    assert "0 mandatory, 1 advisory finding(s)" in result.output and "tracking-ingress-tls" in result.output
    result = runner.invoke(app, ["check", "production", "--format", "json"])
    report = json.loads(result.output)
    assert [(f["rule"], f["enforcement"], f["resource"]) for f in report["findings"]] == [
        ("tracking-ingress-tls", "advisory", "mlplat-production-tracking-ingress")
    ]


def test_a_certificate_on_the_tracking_ingress_serves_https_only_and_clears_the_finding() -> None:
    from mlplat.components.tracking import TrackingSpec, _ingress_annotations

    arn = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
    annotations = _ingress_annotations(TrackingSpec(ingress=True, ingress_certificate_arn=arn))
    assert annotations["alb.ingress.kubernetes.io/listen-ports"] == '[{"HTTPS": 443}]'
    assert annotations["alb.ingress.kubernetes.io/ssl-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"

    def ingress(spec: TrackingSpec) -> Resource:
        return Resource(
            "urn:mlflow",
            "kubernetes:networking.k8s.io/v1:Ingress",
            "mlflow",
            {"metadata": {"annotations": _ingress_annotations(spec)}},
        )

    assert findings("tracking-ingress-tls", ingress(TrackingSpec(ingress=True, ingress_certificate_arn=arn))) == []
    [plain] = findings("tracking-ingress-tls", ingress(TrackingSpec(ingress=True)))
    assert plain.enforcement == "advisory" and "serves plain HTTP on port 80" in plain.problem
    with pytest.raises(ValueError, match="ingress_certificate_arn needs ingress=True"):
        TrackingSpec(ingress_certificate_arn=arn)


def test_check_cli_exits_1_on_a_mandatory_violation_naming_resource_rule_problem_fix(
    tmp_path: Path, production_stack: Render
) -> None:
    document = production_stack.to_json()
    for record in document["resources"]:
        if record["type"] == ECR:
            record["inputs"]["imageTagMutability"] = "MUTABLE"
    saved = tmp_path / "render.json"
    saved.write_text(json.dumps(document))
    result = runner.invoke(app, ["check", "production", "--render", str(saved)])
    assert result.exit_code == 1
    assert "[mandatory] ecr-immutable-tags: mlplat-production-registry-serving" in result.output
    assert "problem: image tags can be overwritten" in result.output
    assert "fix: set imageTagMutability='IMMUTABLE'" in result.output
    markdown = runner.invoke(app, ["check", "production", "--render", str(saved), "-f", "markdown"])
    assert "| **mandatory** | `ecr-immutable-tags` |" in markdown.output


def test_check_cli_rejects_bad_input(tmp_path: Path) -> None:
    assert runner.invoke(app, ["check", "qa"]).exit_code == 2
    not_json = tmp_path / "x.json"
    not_json.write_text("{nope")
    result = runner.invoke(app, ["check", "dev", "--render", str(not_json)])
    assert result.exit_code == 2 and "is not JSON" in result.output
    not_render = tmp_path / "y.json"
    not_render.write_text('{"resources": [{"type": "x"}]}')
    result = runner.invoke(app, ["check", "dev", "--render", str(not_render)])
    assert result.exit_code == 2 and "resources[0] lacks urn, type or name" in result.output
    result = runner.invoke(app, ["check", "dev", "-e", "prod"])
    assert result.exit_code == 2 and "allowed: dev, staging, production" in result.output


def test_markdown_report_lists_findings() -> None:
    f = findings("ecr-scan-on-push", res(ECR, name="repo"))
    text = to_markdown(f, "dev", "dev")
    assert "**1 mandatory**, 0 advisory" in text and "`repo` (aws:ecr/repository:Repository)" in text
    assert to_markdown([], "dev", "dev").endswith(f"All {len(RULES)} rules pass.\n")


def test_eks_versions_past_standard_support_are_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from mlplat.components import k8s_versions
    from mlplat.policy.rules import cluster

    # The calendar moves: judge on the day the versions were checked, not on the day the test runs.
    monkeypatch.setattr(
        cluster, "support_status", lambda v, on=None: k8s_versions.support_status(v, on=dt.date(2026, 11, 29))
    )
    (finding,) = findings("eks-standard-support", res(EKS, version="1.32"))
    assert finding.problem == (
        "Kubernetes 1.32 is in EKS extended support (billed at about 6x the standard control-plane price)"
    )
    assert finding.enforcement == "advisory" and "toward 1.35" in finding.fix
    assert findings("eks-standard-support", res(EKS, version="1.35")) == []
    assert findings("eks-standard-support", res(EKS, version="1.99")) == []  # newer than the calendar
    (gone,) = findings("eks-standard-support", res(EKS, version="1.20"))
    assert gone.problem.endswith("past the end of EKS support (EKS upgrades such control planes itself)")


def test_required_tags_and_strict_environments_are_policy_config() -> None:
    from mlplat.policy.framework import PolicyConfig

    bucket = res("aws:s3/bucket:Bucket", default_tags={"team": "search", "environment": "qa"})
    own = PolicyConfig(required_tags=("team",), strict_environments=("qa", "prod"))
    assert check_resources([bucket], "qa", [RULES_BY_ID["required-tags"]], policy=own) == []
    (missing,) = check_resources([bucket], "qa", [RULES_BY_ID["required-tags"]])
    assert missing.problem == "missing tag(s) project, owner, cost-center"
    # Strict where the organisation says so, not only in an environment spelled "production".
    multi_az = RULES_BY_ID["rds-multi-az"]
    db = res("aws:rds/instance:Instance", multiAz=False)
    assert check_resources([db], "qa", [multi_az], policy=own)[0].enforcement == "mandatory"
    assert check_resources([db], "qa", [multi_az])[0].enforcement == "advisory"
    assert PolicyConfig.from_config({"requiredTags": ["team"]}).required_tags == ("team",)
    with pytest.raises(ValueError, match=r"mlplat:policy: unknown key\(s\) \['tags'\]; allowed: requiredTags"):
        PolicyConfig.from_config({"tags": ["team"]})
    with pytest.raises(ValueError, match=r"mlplat:policy.strictEnvironments: 'prod' is not a list of names"):
        PolicyConfig.from_config({"strictEnvironments": "prod"})
