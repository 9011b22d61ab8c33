"""The platform's VPC: public, private and database subnets per AZ, NAT, endpoints and flow logs."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal, Self

import pulumi
import pulumi_aws as aws
from pydantic import AliasChoices, Field, field_validator, model_validator

from mlplat.components.iam import policy_document, service_trust_policy, statement
from mlplat.components.options import component_args
from mlplat.components.spec import Spec
from mlplat.components.subnets import DEFAULT_NEWBITS, plan_subnets

__all__ = ["Network", "NetworkArgs", "NetworkSpec", "SubnetCidrs", "SubnetNewbits"]

# Interface endpoints that let private nodes pull images, get IRSA credentials and ship logs without NAT.
DEFAULT_INTERFACE_ENDPOINTS: tuple[str, ...] = ("ecr.api", "ecr.dkr", "sts", "logs")

LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
"""The retention periods CloudWatch Logs accepts."""


class SubnetNewbits(Spec):
    """Bits added to the VPC prefix for each tier's subnets (as Terraform's ``cidrsubnet``): /16 + 3 = /19."""

    private: int = Field(default=DEFAULT_NEWBITS["private"], ge=1, le=12)
    """The private subnets' (nodes and pods)."""
    public: int = Field(default=DEFAULT_NEWBITS["public"], ge=1, le=12)
    """The public subnets' (load balancers, NAT)."""
    database: int = Field(default=DEFAULT_NEWBITS["database"], ge=1, le=12)
    """The database subnets'."""


class SubnetCidrs(Spec):
    """Explicit subnet CIDRs per tier, one per AZ, in AZ order (overrides the computed layout)."""

    public: list[ipaddress.IPv4Network]
    """The public subnets."""
    private: list[ipaddress.IPv4Network]
    """The private subnets."""
    database: list[ipaddress.IPv4Network]
    """The database subnets."""


class NetworkSpec(Spec):
    """The VPC's settings (``mlplat:network``): what a user decides; :class:`NetworkArgs` adds the wiring."""

    cidr_block: str = Field(
        default="10.0.0.0/16", validation_alias=AliasChoices("cidr", "cidr_block"), serialization_alias="cidr"
    )
    """The VPC's IPv4 CIDR: a private (RFC 1918) range, /16 to /24."""
    az_count: int = Field(default=3, ge=2, le=6)
    """How many availability zones to span (2 to 6); one subnet per tier in each."""
    availability_zones: list[str] | None = None
    """Explicit AZ names, exactly ``az_count`` of them; default: the region's first ``az_count`` available zones."""
    nat: Literal["single", "per_az"] = "per_az"
    """``"single"`` (one NAT gateway, cheap, one AZ's outage cuts egress) or ``"per_az"`` (HA)."""
    interface_endpoints: bool = True
    """Create the interface endpoints in ``interface_endpoint_services``."""
    interface_endpoint_services: list[str] = list(DEFAULT_INTERFACE_ENDPOINTS)
    """Service suffixes for interface endpoints (``com.amazonaws.<region>.<s>``)."""
    flow_log_retention_days: int = 90
    """CloudWatch retention of the VPC flow logs (one of the periods CloudWatch Logs accepts)."""
    subnet_newbits: SubnetNewbits = SubnetNewbits()
    """Bits added to the VPC prefix per tier (``private``, ``public``, ``database``)."""
    subnet_cidrs: SubnetCidrs | None = Field(
        default=None, validation_alias=AliasChoices("subnets", "subnet_cidrs"), serialization_alias="subnets"
    )
    """Explicit CIDRs per tier, one per AZ; overrides ``subnet_newbits``."""

    @field_validator("cidr_block", mode="before")
    @classmethod
    def _cidr(cls, value: Any) -> str:
        # The stack file writes a string; a Python caller may hand an IPv4Network. The VPC gets the string form.
        try:
            net = ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network in CIDR form ({exc}); e.g. 10.0.0.0/16") from exc
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(
                f"{value!r}: the VPC prefix must be between /16 and /24 (AWS allows /16 to /28, "
                "and a /25 or smaller leaves no room for three tiers of subnets)"
            )
        if not net.is_private:
            raise ValueError(f"{value!r} is not a private (RFC 1918) range; use e.g. 10.0.0.0/16")
        return str(net)

    @field_validator("flow_log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"{value} is not a CloudWatch Logs retention period; allowed: "
                + ", ".join(map(str, LOG_RETENTION_DAYS))
            )
        return value

    @field_validator("availability_zones")
    @classmethod
    def _azs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"{value} lists an availability zone twice")
        return value

    @model_validator(mode="after")
    def _layout(self) -> Self:
        if self.availability_zones is not None and len(self.availability_zones) != self.az_count:
            raise ValueError(
                f"availabilityZones lists {len(self.availability_zones)} zones but azCount is "
                f"{self.az_count}; list exactly azCount zones or leave availabilityZones out"
            )
        self.subnet_layout()  # raises with a specific message when the subnets do not fit or overlap
        return self

    def subnet_layout(self) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each tier's subnet CIDRs, one per AZ (see :func:`mlplat.components.subnets.plan_subnets`)."""
        explicit = None if self.subnet_cidrs is None else self.subnet_cidrs.model_dump()
        return plan_subnets(self.cidr_block, self.az_count, self.subnet_newbits.model_dump(), explicit)


class NetworkArgs(NetworkSpec):
    """Arguments of :class:`Network`: its settings (:class:`NetworkSpec`) and what a parent wires."""

    cluster_name: str | None = None
    """When set, subnets carry the EKS discovery tags for this cluster name."""
    region: str | None = None
    """The region for endpoint service names; default: the provider's region."""


class Network(pulumi.ComponentResource):
    """A VPC laid out for EKS and RDS.

    Per AZ: a public subnet (load balancers, NAT), a private subnet (nodes and pods; egress through NAT)
    and a database subnet with no route to the internet. An S3 gateway endpoint keeps artifact traffic off
    NAT; optional interface endpoints do the same for ECR, STS and CloudWatch Logs. Flow logs go to
    CloudWatch. ``nat_gateways`` holds the NAT gateway resources.
    """

    vpc_id: pulumi.Output[str]
    """The VPC's id."""
    vpc_cidr: pulumi.Output[str]
    """The VPC's IPv4 CIDR block."""
    public_subnet_ids: pulumi.Output[list[str]]
    """The public subnets, one per AZ (load balancers, NAT)."""
    private_subnet_ids: pulumi.Output[list[str]]
    """The private subnets, one per AZ (nodes and pods)."""
    database_subnet_ids: pulumi.Output[list[str]]
    """The database subnets, one per AZ, with no route to the internet."""
    availability_zones: pulumi.Output[list[str]]
    """The AZs, in the order of the subnet lists."""
    nat_gateway_ids: pulumi.Output[list[str]]
    """The NAT gateways (one, or one per AZ)."""
    private_route_table_ids: pulumi.Output[list[str]]
    """The private subnets' route tables."""
    endpoint_security_group_id: pulumi.Output[str] | None
    """The interface endpoints' security group; None without interface endpoints."""

    def __init__(
        self, name: str, args: NetworkArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("Network", NetworkArgs, args, kwargs)
        super().__init__("mlplat:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        layout = args.subnet_layout()
        region: pulumi.Input[str] = (
            args.region or aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
        )
        azs: list[pulumi.Input[str]]
        if args.availability_zones is not None:
            azs = list(args.availability_zones)
        else:
            available = aws.get_availability_zones_output(
                state="available", opts=pulumi.InvokeOutputOptions(parent=self)
            )
            azs = [available.names[i] for i in range(args.az_count)]

        def tags(suffix: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
            return {"Name": f"{name}-{suffix}", **(extra or {})}

        cluster_tags = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"} if args.cluster_name else {}
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr_block,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=tags("vpc"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags("igw"), opts=child)

        def subnets(tier: str, extra: Mapping[str, str]) -> list[aws.ec2.Subnet]:
            return [
                aws.ec2.Subnet(
                    f"{name}-{tier}-{i}",
                    vpc_id=self.vpc.id,
                    cidr_block=str(cidr),
                    availability_zone=azs[i],
                    map_public_ip_on_launch=False,
                    tags=tags(f"{tier}-{i}", {"mlplat.io/tier": tier, **extra}),
                    opts=child,
                )
                for i, cidr in enumerate(layout[tier])
            ]

        elb = {"kubernetes.io/role/elb": "1", **cluster_tags} if args.cluster_name else {}
        internal_elb = {"kubernetes.io/role/internal-elb": "1", **cluster_tags} if args.cluster_name else {}
        public = subnets("public", elb)
        private = subnets("private", internal_elb)
        database = subnets("database", {})

        public_rt = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=self.vpc.id, tags=tags("public-rt"), opts=child)
        aws.ec2.Route(
            f"{name}-public-internet",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        for i, subnet in enumerate(public):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{i}", route_table_id=public_rt.id, subnet_id=subnet.id, opts=child
            )

        nat_count = args.az_count if args.nat == "per_az" else 1
        nats = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(f"{name}-nat-eip-{i}", domain="vpc", tags=tags(f"nat-eip-{i}"), opts=child)
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=public[i].id,
                    connectivity_type="public",
                    tags=tags(f"nat-{i}"),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )

        private_rts = []
        for i, subnet in enumerate(private):
            rt = aws.ec2.RouteTable(
                f"{name}-private-rt-{i}", vpc_id=self.vpc.id, tags=tags(f"private-rt-{i}"), opts=child
            )
            aws.ec2.Route(
                f"{name}-private-nat-{i}",
                route_table_id=rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nats[i % nat_count].id,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-rta-{i}", route_table_id=rt.id, subnet_id=subnet.id, opts=child
            )
            private_rts.append(rt)

        # Database subnets get a table of their own with only the implicit local route: no internet, ever.
        database_rt = aws.ec2.RouteTable(
            f"{name}-database-rt", vpc_id=self.vpc.id, tags=tags("database-rt"), opts=child
        )
        for i, subnet in enumerate(database):
            aws.ec2.RouteTableAssociation(
                f"{name}-database-rta-{i}", route_table_id=database_rt.id, subnet_id=subnet.id, opts=child
            )

        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=self.vpc.id,
            service_name=pulumi.Output.concat("com.amazonaws.", region, ".s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags=tags("s3"),
            opts=child,
        )

        self.endpoint_security_group_id = None
        if args.interface_endpoints:
            sg = aws.ec2.SecurityGroup(
                f"{name}-endpoints",
                vpc_id=self.vpc.id,
                description="HTTPS from inside the VPC to interface endpoints",
                tags=tags("endpoints"),
                opts=child,
            )
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-endpoints-https",
                security_group_id=sg.id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4=args.cidr_block,
                description="HTTPS from the VPC",
                opts=child,
            )
            for service in args.interface_endpoint_services:
                aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}",
                    vpc_id=self.vpc.id,
                    service_name=pulumi.Output.concat("com.amazonaws.", region, f".{service}"),
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=[s.id for s in private],
                    security_group_ids=[sg.id],
                    tags=tags(service.replace(".", "-")),
                    opts=child,
                )
            self.endpoint_security_group_id = sg.id

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=args.flow_log_retention_days,
            tags=tags("flow-logs"),
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=service_trust_policy("vpc-flow-logs.amazonaws.com"),
            description="Lets VPC Flow Logs write to its CloudWatch log group",
            tags=tags("flow-logs"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=policy_document(
                [
                    statement(
                        ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                        [log_group.arn, pulumi.Output.concat(log_group.arn, ":*")],
                    )
                ]
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=tags("flow-log"),
            opts=child,
        )

        self.vpc_id = self.vpc.id
        self.vpc_cidr = self.vpc.cidr_block
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        self.database_subnet_ids = pulumi.Output.all(*[s.id for s in database])
        self.availability_zones = pulumi.Output.all(*azs)
        self.nat_gateways: list[aws.ec2.NatGateway] = nats
        self.nat_gateway_ids = pulumi.Output.all(*[n.id for n in nats])
        self.private_route_table_ids = pulumi.Output.all(*[r.id for r in private_rts])
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "vpc_cidr": self.vpc_cidr,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "database_subnet_ids": self.database_subnet_ids,
                "availability_zones": self.availability_zones,
                "nat_gateway_ids": self.nat_gateway_ids,
                "private_route_table_ids": self.private_route_table_ids,
                "endpoint_security_group_id": self.endpoint_security_group_id,
            }
        )
