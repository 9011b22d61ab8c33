"""Tracking: RDS for MLflow locked down, the password kept secret, MLflow wired to RDS and S3."""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pytest

from mlplat.components.tracking import DatabaseArgs, Tracking, TrackingArgs
from mlplat.infra.engine import MASK, Render


@pytest.fixture
def tracking(on_cluster: Callable[..., Render]) -> Callable[..., Render]:
    def _render(**database: object) -> Render:
        def build(opts: pulumi.ResourceOptions) -> None:
            t = Tracking("tracking", TrackingArgs(
                vpc_id="vpc-0abc", database_subnet_ids=["subnet-a", "subnet-b", "subnet-c"],
                client_security_group_ids=["sg-nodes"], artifacts_uri="s3://artifacts-bucket/mlflow",
                database=DatabaseArgs(**database), service_account_role_arn="arn:aws:iam::1:role/mlflow"), opts=opts)
            pulumi.export("uri", t.uri)
            pulumi.export("backend", t.backend_store_uri)

        return on_cluster(build)

    return _render


def test_production_database_is_multi_az_encrypted_private_and_protected(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    db = stack.one("aws:rds/instance:Instance")
    assert db.inputs["multiAz"] is True and db.inputs["storageEncrypted"] is True
    assert db.inputs["publiclyAccessible"] is False and db.inputs["deletionProtection"] is True
    assert db.inputs["backupRetentionPeriod"] >= 7 and db.inputs["skipFinalSnapshot"] is False
    assert db.inputs["storageType"] == "gp3" and db.inputs["maxAllocatedStorage"] > db.inputs["allocatedStorage"]
    assert db.options["protect"] and db.options["retain_on_delete"]
    params = stack.one("aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]
    assert {(p["name"], p["value"]) for p in params} == {("rds.force_ssl", "1")}
    assert db.inputs["dbSubnetGroupName"] == stack.one("aws:rds/subnetGroup:SubnetGroup").id


def test_dev_database_can_be_cheap(tracking: Callable[..., Render]) -> None:
    db = tracking(multi_az=False, deletion_protection=False, backup_retention_days=1, final_snapshot=False,
                  protect=False).one("aws:rds/instance:Instance")
    assert db.inputs["multiAz"] is False and db.inputs["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in db.inputs and not db.options["protect"]


def test_security_group_admits_only_the_cluster_on_5432(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    (rule,) = stack.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["referencedSecurityGroupId"] == "sg-nodes"
    assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (5432, 5432)
    assert "cidrIpv4" not in rule.inputs
    assert stack.one("aws:rds/instance:Instance").inputs["vpcSecurityGroupIds"] == [
        stack.one("aws:ec2/securityGroup:SecurityGroup").id]


def test_password_never_appears_in_plain_text(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    assert stack.one("aws:rds/instance:Instance").inputs["password"] == MASK
    assert stack.one("kubernetes:core/v1:Secret").inputs["stringData"] == MASK
    assert stack.outputs["backend"] == MASK
    # The mock's generated password is derived from the resource name; it must not leak anywhere.
    from mlplat.infra.mock_outputs import MockOutputs
    _, generated = MockOutputs("mlplat", "test").outputs("random:index/randomPassword:RandomPassword",
                                                         "tracking-db-password", {"length": 32})
    assert generated["result"]["value"] not in stack.dumps()


def test_mlflow_points_at_rds_and_the_bucket(tracking: Callable[..., Render]) -> None:
    stack = tracking()
    deployment = stack.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    (server,) = deployment["containers"]
    args = server["args"]
    assert args[args.index("--backend-store-uri") + 1] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert args[args.index("--artifacts-destination") + 1] == "s3://artifacts-bucket/mlflow"
    assert "--serve-artifacts" in args
    backend = next(e for e in server["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert backend["valueFrom"]["secretKeyRef"]["name"] == "mlflow-backend"
    (upgrade,) = deployment["initContainers"]
    assert upgrade["args"] == ["db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert stack.outputs["uri"] == "http://mlflow.mlflow.svc.cluster.local:5000"
    sa = stack.one("kubernetes:core/v1:ServiceAccount").inputs
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/mlflow"


def test_database_args_are_validated() -> None:
    with pytest.raises(ValueError, match=r"0\.\.35"):
        DatabaseArgs(backup_retention_days=40)
    with pytest.raises(ValueError, match="does not match"):
        DatabaseArgs(engine_version="15", parameter_family="postgres16")
