"""Realistic computed outputs for the offline engine: ids, ARNs, endpoints, a kubeconfig, an OIDC issuer.

Values are derived from the resource's type and name with a hash, so a render is deterministic: the same
program and config always produce the same ids, and two renders diff only where the program changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from pulumi.runtime import mocks as pulumi_mocks

ACCOUNT_ID = "123456789012"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"

# Type token -> prefix of the resource id AWS would assign.
_ID_PREFIXES = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
    "aws:ec2/flowLog:FlowLog": "fl",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
}

# Types whose last segment clashes with another provider's (eks:index:Cluster vs aws:eks/cluster:Cluster):
# dispatched by the full token, before the last-segment specials.
_TOKEN_SPECIALS = {
    "eks:index:Cluster": "_eks_cluster",
}


def secret(value: Any) -> dict[str, Any]:
    """A value in the wire form of a Pulumi secret."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def _digest(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _service(type_: str) -> str:
    # "aws:ec2/vpc:Vpc" -> "ec2"
    return type_.split(":")[1].split("/")[0]


def fake_certificate(name: str) -> str:
    """A base64 PEM-shaped blob standing in for a cluster CA (never a real key)."""
    body = base64.b64encode(hashlib.sha512(name.encode()).digest() * 4).decode()
    return base64.b64encode(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()).decode()


def kubeconfig(cluster_name: str, endpoint: str, ca: str, region: str) -> dict[str, Any]:
    """The kubeconfig pulumi-eks returns: exec-based auth through `aws eks get-token`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca}}],
        "contexts": [{"name": "aws", "context": {"cluster": cluster_name, "user": "aws"}}],
        "current-context": "aws",
        "users": [
            {
                "name": "aws",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "aws",
                        "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region],
                    }
                },
            }
        ],
    }


class MockOutputs(pulumi_mocks.Mocks):
    """Answers resource registrations and invokes with outputs shaped like the real providers'."""

    def __init__(self, project: str, stack: str, region: str = "us-east-1") -> None:
        self.project = project
        self.stack = stack
        self.region = region

    # -- resources -------------------------------------------------------------------------------------
    def outputs(self, type_: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The (id, computed outputs) for a resource of ``type_`` named ``name`` with ``inputs``."""
        special = getattr(self, _TOKEN_SPECIALS.get(type_, "_" + type_.split(":")[-1].replace(".", "_")), None)
        if type_.startswith("pulumi:providers:"):
            return _digest(type_, name, length=8), {}
        prefix = _ID_PREFIXES.get(type_)
        physical = inputs.get("name") or f"{name}-{_digest(type_, name, length=7)}"
        rid = f"{prefix}-{_digest(type_, name)}" if prefix else physical
        computed: dict[str, Any] = {
            "id": rid,
            "arn": f"arn:aws:{_service(type_)}:{self.region}:{ACCOUNT_ID}:{type_.split(':')[-1].lower()}/{rid}",
        }
        if "name" in inputs or prefix is None:
            computed["name"] = physical
        if special is not None:
            computed.update(special(name, rid, physical, inputs))
        return str(computed["id"]), computed

    def _Eip(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        octets = bytes.fromhex(_digest(name, length=6))
        return {"allocationId": rid, "publicIp": f"54.{octets[0]}.{octets[1]}.{octets[2]}"}

    def _Vpc(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "defaultSecurityGroupId": f"sg-{_digest(rid, 'default')}",
            "mainRouteTableId": f"rtb-{_digest(rid, 'main')}",
            "ownerId": ACCOUNT_ID,
        }

    def _VpcEndpoint(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "dnsEntries": [{"dnsName": f"{rid}.{inputs.get('serviceName', 'svc')}.vpce.amazonaws.com"}],
            "prefixListId": f"pl-{_digest(rid, length=8)}",
        }

    def _Role(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{physical}", "uniqueId": "AROA" + _digest(rid).upper()}

    def _Policy(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        arn = f"arn:aws:iam::{ACCOUNT_ID}:policy/{physical}"
        return {"id": arn, "arn": arn, "policyId": "ANPA" + _digest(rid).upper()}

    def _LogGroup(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"arn": f"arn:aws:logs:{self.region}:{ACCOUNT_ID}:log-group:{physical}"}

    def _Bucket(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        bucket = inputs.get("bucket") or f"{name}-{_digest('bucket', name, length=7)}"
        return {
            "id": bucket,
            "bucket": bucket,
            "arn": f"arn:aws:s3:::{bucket}",
            "bucketDomainName": f"{bucket}.s3.amazonaws.com",
            "bucketRegionalDomainName": f"{bucket}.s3.{self.region}.amazonaws.com",
            "region": self.region,
        }

    def _Repository(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "arn": f"arn:aws:ecr:{self.region}:{ACCOUNT_ID}:repository/{physical}",
            "registryId": ACCOUNT_ID,
            "repositoryUrl": f"{ACCOUNT_ID}.dkr.ecr.{self.region}.amazonaws.com/{physical}",
        }

    def _Key(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        h = _digest("kms", name, length=32)
        key_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        return {"id": key_id, "keyId": key_id, "arn": f"arn:aws:kms:{self.region}:{ACCOUNT_ID}:key/{key_id}"}

    def _Image(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        image = inputs.get("imageName", name)
        digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
        return {"repoDigest": f"{image.split(':')[0]}@{digest}", "imageName": image}

    def _Instance(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if "engine" not in inputs:  # only RDS instances (aws:rds/instance:Instance) get database outputs
            return {}
        identifier = inputs.get("identifier") or physical
        address = f"{identifier}.c{_digest('rds', name, length=10)}.{self.region}.rds.amazonaws.com"
        port = int(inputs.get("port", 5432))
        return {
            "id": identifier,
            "identifier": identifier,
            "address": address,
            "endpoint": f"{address}:{port}",
            "port": port,
            "arn": f"arn:aws:rds:{self.region}:{ACCOUNT_ID}:db:{identifier}",
        }

    def _RandomPassword(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        length = int(inputs.get("length", 32))
        value = (hashlib.sha256(("pw" + name).encode()).hexdigest() * 4)[:length]
        return {"result": secret(value), "bcryptHash": secret("$2a$10$" + value)}

    def _RandomId(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        hexv = _digest("rid", name, length=2 * int(inputs.get("byteLength", 4)))
        return {"hex": hexv, "dec": str(int(hexv, 16)), "b64Url": hexv}

    def _eks_cluster(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        # pulumi-eks's Cluster component: its plain outputs (kubeconfig, OIDC, security groups). Outputs typed
        # as resources (eksCluster, core, nodeSecurityGroup) are left unset: with resource references off the
        # SDK cannot rebuild a Resource from them, so mlplat reads only the plain ones.
        cluster = inputs.get("name") or physical
        endpoint = f"https://{_digest('endpoint', cluster, length=32).upper()}.gr7.{self.region}.eks.amazonaws.com"
        issuer = f"oidc.eks.{self.region}.amazonaws.com/id/{_digest('oidc', cluster, length=32).upper()}"
        ca = fake_certificate(cluster)
        config = kubeconfig(cluster, endpoint, ca, self.region)
        cluster_sg = f"sg-{_digest(cluster, 'cluster-sg')}"
        return {
            "id": cluster,
            "kubeconfig": config,
            "kubeconfigJson": json.dumps(config),
            "clusterSecurityGroupId": cluster_sg,
            "nodeSecurityGroupId": f"sg-{_digest(cluster, 'node-sg')}",
            "oidcProviderArn": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{issuer}",
            "oidcProviderUrl": f"https://{issuer}",
            "oidcIssuer": issuer,
        }

    def _NodeGroup(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        group = inputs.get("nodeGroupName") or physical
        cluster = inputs.get("clusterName", "cluster")
        uid = _digest("ng", cluster, group, length=32)
        uid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}"
        return {
            "id": f"{cluster}:{group}",
            "arn": f"arn:aws:eks:{self.region}:{ACCOUNT_ID}:nodegroup/{cluster}/{group}/{uid}",
            "nodeGroupName": group,
            "status": "ACTIVE",
            "resources": [{"autoscalingGroups": [{"name": f"eks-{group}-{uid}"}], "remoteAccessSecurityGroupId": ""}],
        }

    def _Addon(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        addon = inputs.get("addonName", name)
        cluster = inputs.get("clusterName", "cluster")
        return {
            "id": f"{cluster}:{addon}",
            "arn": f"arn:aws:eks:{self.region}:{ACCOUNT_ID}:addon/{cluster}/{addon}/{_digest('addon', name)}",
        }

    def _LaunchTemplate(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "latestVersion": 1,
            "defaultVersion": 1,
            "arn": f"arn:aws:ec2:{self.region}:{ACCOUNT_ID}:launch-template/{rid}",
        }

    def _Queue(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        queue = inputs.get("name") or physical
        return {
            "id": f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{queue}",
            "url": f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{queue}",
            "arn": f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{queue}",
            "name": queue,
        }

    def _EventRule(self, name: str, rid: str, physical: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"name": physical, "arn": f"arn:aws:events:{self.region}:{ACCOUNT_ID}:rule/{physical}"}

    # -- the Pulumi Mocks interface (used by MockMonitor paths we do not override) -----------------------
    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        rid, computed = self.outputs(args.typ, args.name, dict(args.inputs))
        return rid, {**args.inputs, **computed}

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return self.invoke(args.token, dict(args.args)) or {}, None

    # -- invokes ---------------------------------------------------------------------------------------
    def invoke(self, token: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """The result of a data-source call such as ``aws.get_availability_zones``; None for one we cannot answer."""
        region = args.get("region") or self.region
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            letters = "abcdef"
            return {
                "names": [f"{region}{c}" for c in letters],
                "zoneIds": [f"use1-az{i + 1}" for i in range(len(letters))],
                "id": region,
                "state": "available",
            }
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/offline",
                "id": ACCOUNT_ID,
                "userId": "AIDAOFFLINE",
            }
        if token == "aws:index/getRegion:getRegion":
            return {"name": region, "region": region, "id": region, "endpoint": f"ec2.{region}.amazonaws.com"}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws", "reverseDnsPrefix": "com.amazonaws"}
        if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            token_value = base64.b64encode(b"AWS:offline-token").decode()
            return {
                "authorizationToken": secret(token_value),
                "password": secret("offline-token"),
                "userName": "AWS",
                "proxyEndpoint": f"https://{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com",
                "expiresAt": "2099-01-01T00:00:00Z",
                "id": region,
            }
        lookup = _LOOKUPS.get(token)
        return None if lookup is None else lookup(self, args, region)

    # -- lookups of things that already exist: deterministic answers derived from what was asked for ------------

    def _policy_document(self, args: dict[str, Any], region: str) -> dict[str, Any]:
        document = policy_document_json(args)
        return {
            "json": json.dumps(document, indent=2),
            "minifiedJson": json.dumps(document, separators=(",", ":")),
            "id": _digest("policy", json.dumps(document, sort_keys=True), length=10),
        }

    def _eks_cluster_lookup(self, args: dict[str, Any], region: str) -> dict[str, Any]:
        name = str(args.get("name"))
        outputs = self._eks_cluster(name, name, name, {"name": name})
        vpc = f"vpc-{_digest('vpc', name)}"
        return {
            "id": name,
            "name": name,
            "arn": f"arn:aws:eks:{region}:{ACCOUNT_ID}:cluster/{name}",
            "endpoint": outputs["kubeconfig"]["clusters"][0]["cluster"]["server"],
            "certificateAuthorities": [{"data": fake_certificate(name)}],
            "identities": [{"oidcs": [{"issuer": "https://" + outputs["oidcIssuer"]}]}],
            "version": "1.35",
            "platformVersion": "eks.1",
            "status": "ACTIVE",
            "roleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}-cluster",
            "vpcConfig": {
                "vpcId": vpc,
                "subnetIds": self._subnet_ids(vpc, 3),
                "securityGroupIds": [],
                "clusterSecurityGroupId": outputs["clusterSecurityGroupId"],
                "endpointPrivateAccess": True,
                "endpointPublicAccess": False,
                "publicAccessCidrs": [],
            },
            "accessConfigs": [{"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": False}],
            "tags": {},
        }

    def _vpc_lookup(self, args: dict[str, Any], region: str) -> dict[str, Any]:
        vpc = args.get("id") or f"vpc-{_digest('vpc', json.dumps(args, sort_keys=True))}"
        return {
            "id": vpc,
            "arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:vpc/{vpc}",
            "cidrBlock": "10.0.0.0/16",
            "default": False,
            "state": "available",
            "ownerId": ACCOUNT_ID,
            "tags": args.get("tags") or {},
            "mainRouteTableId": f"rtb-{_digest('main', vpc)}",
            "enableDnsHostnames": True,
            "enableDnsSupport": True,
            "instanceTenancy": "default",
        }

    def _subnets_lookup(self, args: dict[str, Any], region: str) -> dict[str, Any]:
        key = json.dumps(args, sort_keys=True)
        return {"id": region, "ids": self._subnet_ids(key, 3)}

    def _subnet_lookup(self, args: dict[str, Any], region: str) -> dict[str, Any]:
        subnet = args.get("id") or f"subnet-{_digest('subnet', json.dumps(args, sort_keys=True))}"
        return {
            "id": subnet,
            "arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:subnet/{subnet}",
            "vpcId": args.get("vpcId") or f"vpc-{_digest('vpc', subnet)}",
            "availabilityZone": f"{region}a",
            "cidrBlock": "10.0.0.0/19",
            "state": "available",
            "tags": args.get("tags") or {},
        }

    @staticmethod
    def _subnet_ids(seed: str, count: int) -> list[str]:
        return [f"subnet-{_digest('subnet', seed, str(i))}" for i in range(count)]


def policy_document_json(args: dict[str, Any]) -> dict[str, Any]:
    """The IAM policy document ``aws.iam.get_policy_document`` would build from its arguments (no override docs)."""

    def one_or_many(values: list[Any]) -> Any:
        return values[0] if len(values) == 1 else sorted(values)

    statements = []
    for stmt in args.get("statements") or []:
        out: dict[str, Any] = {}
        if stmt.get("sid"):
            out["Sid"] = stmt["sid"]
        out["Effect"] = stmt.get("effect") or "Allow"
        for key, field in (
            ("Action", "actions"),
            ("NotAction", "notActions"),
            ("Resource", "resources"),
            ("NotResource", "notResources"),
        ):
            if stmt.get(field):
                out[key] = one_or_many(stmt[field])
        for key, field in (("Principal", "principals"), ("NotPrincipal", "notPrincipals")):
            if stmt.get(field):
                out[key] = {p["type"]: one_or_many(p["identifiers"]) for p in stmt[field]}
        conditions: dict[str, dict[str, Any]] = {}
        for cond in stmt.get("conditions") or []:
            conditions.setdefault(cond["test"], {})[cond["variable"]] = one_or_many(cond["values"])
        if conditions:
            out["Condition"] = conditions
        statements.append(out)
    document: dict[str, Any] = {"Version": args.get("version") or "2012-10-17", "Statement": statements}
    if args.get("policyId"):
        document["Id"] = args["policyId"]
    return document


_LOOKUPS: dict[str, Callable[[MockOutputs, dict[str, Any], str], dict[str, Any]]] = {
    "aws:iam/getPolicyDocument:getPolicyDocument": MockOutputs._policy_document,
    "aws:eks/getCluster:getCluster": MockOutputs._eks_cluster_lookup,
    "aws:ec2/getVpc:getVpc": MockOutputs._vpc_lookup,
    "aws:ec2/getSubnets:getSubnets": MockOutputs._subnets_lookup,
    "aws:ec2/getSubnet:getSubnet": MockOutputs._subnet_lookup,
}
"""Data sources answered offline beyond the account/region basics above; any other one is an error."""
