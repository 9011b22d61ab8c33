"""Network: rendered by the offline engine from the shipped stacks and from inline programs."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pulumi
import pytest

from mlplat.components.network import Network, NetworkArgs
from mlplat.components.subnets import plan_subnets
from mlplat.infra.engine import Render

NAT = "aws:ec2/natGateway:NatGateway"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"


def subnets_of_tier(stack: Render, tier: str) -> list:
    return [s for s in stack.by_type(SUBNET) if s.inputs["tags"]["mlplat.io/tier"] == tier]


def routes_of(stack: Render, subnet_id: str) -> list[dict]:
    tables = {a.inputs["routeTableId"] for a in stack.by_type(RTA) if a.inputs["subnetId"] == subnet_id}
    assert len(tables) == 1, f"subnet {subnet_id} should be associated with exactly one route table"
    return [r.inputs for r in stack.by_type(ROUTE) if r.inputs["routeTableId"] in tables]


def test_production_has_one_nat_per_az_in_distinct_public_subnets(production_stack: Render) -> None:
    nats = production_stack.by_type(NAT)
    public_ids = {s.id for s in subnets_of_tier(production_stack, "public")}
    assert len(nats) == 3
    assert {n.inputs["subnetId"] for n in nats} == public_ids


def test_dev_has_a_single_nat(dev_stack: Render) -> None:
    assert len(dev_stack.by_type(NAT)) == 1


def test_nine_subnets_three_tiers_across_three_azs(production_stack: Render) -> None:
    for tier in ("public", "private", "database"):
        subnets = subnets_of_tier(production_stack, tier)
        assert len(subnets) == 3
        assert len({s.inputs["availabilityZone"] for s in subnets}) == 3
    vpc = ipaddress.IPv4Network(production_stack.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"])
    cidrs = [ipaddress.IPv4Network(s.inputs["cidrBlock"]) for s in production_stack.by_type(SUBNET)]
    assert all(c.subnet_of(vpc) for c in cidrs)
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])


def test_database_subnets_have_no_route_to_the_internet(production_stack: Render) -> None:
    for subnet in subnets_of_tier(production_stack, "database"):
        assert routes_of(production_stack, subnet.id) == []


def test_private_subnets_egress_through_the_nat_of_their_own_az(production_stack: Render) -> None:
    nat_subnet = {n.id: n.inputs["subnetId"] for n in production_stack.by_type(NAT)}
    az_of = {s.id: s.inputs["availabilityZone"] for s in production_stack.by_type(SUBNET)}
    for subnet in subnets_of_tier(production_stack, "private"):
        (route,) = routes_of(production_stack, subnet.id)
        assert route["destinationCidrBlock"] == "0.0.0.0/0"
        assert az_of[nat_subnet[route["natGatewayId"]]] == subnet.inputs["availabilityZone"]


def test_public_subnets_route_to_the_internet_gateway(dev_stack: Render) -> None:
    igw = dev_stack.one("aws:ec2/internetGateway:InternetGateway")
    for subnet in subnets_of_tier(dev_stack, "public"):
        (route,) = routes_of(dev_stack, subnet.id)
        assert (route["destinationCidrBlock"], route["gatewayId"]) == ("0.0.0.0/0", igw.id)


def test_subnets_carry_the_eks_discovery_tags(production_stack: Render) -> None:
    cluster_tag = "kubernetes.io/cluster/mlplat-production"
    for s in subnets_of_tier(production_stack, "public"):
        assert s.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert s.inputs["tags"][cluster_tag] == "shared"
    for s in subnets_of_tier(production_stack, "private"):
        assert s.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
    for s in subnets_of_tier(production_stack, "database"):
        assert not any(k.startswith("kubernetes.io/") for k in s.inputs["tags"])


def test_interface_endpoints_follow_the_knob(production_stack: Render, dev_stack: Render) -> None:
    def services(stack: Render, kind: str) -> set[str]:
        return {
            e.inputs["serviceName"].rsplit(".", 1)[-1]
            if kind == "Gateway"
            else e.inputs["serviceName"].split("us-east-1.", 1)[1]
            for e in stack.by_type(ENDPOINT)
            if e.inputs["vpcEndpointType"] == kind
        }

    assert services(production_stack, "Gateway") == {"s3"}
    assert services(production_stack, "Interface") == {"ecr.api", "ecr.dkr", "sts", "logs"}
    assert services(dev_stack, "Gateway") == {"s3"}
    assert services(dev_stack, "Interface") == set()
    for endpoint in production_stack.by_type(ENDPOINT):
        if endpoint.inputs["vpcEndpointType"] == "Interface":
            assert endpoint.inputs["privateDnsEnabled"] is True
            assert len(endpoint.inputs["subnetIds"]) == 3


def test_endpoint_security_group_admits_https_from_the_vpc_only(production_stack: Render) -> None:
    (rule,) = [
        r
        for r in production_stack.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if "mlplat:network:Network$" in r.urn
    ]
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (443, 443, "tcp")
    assert rule.inputs["cidrIpv4"] == "10.20.0.0/16"


def test_s3_gateway_endpoint_serves_the_private_route_tables(production_stack: Render) -> None:
    (gateway,) = [e for e in production_stack.by_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Gateway"]
    private_tables = {
        a.inputs["routeTableId"]
        for a in production_stack.by_type(RTA)
        for s in subnets_of_tier(production_stack, "private")
        if a.inputs["subnetId"] == s.id
    }
    assert set(gateway.inputs["routeTableIds"]) == private_tables


def test_flow_logs_go_to_cloudwatch_with_the_configured_retention(production_stack: Render, dev_stack: Render) -> None:
    for stack, days in ((production_stack, 90), (dev_stack, 7)):
        flow = stack.one("aws:ec2/flowLog:FlowLog")
        group = stack.one("aws:cloudwatch/logGroup:LogGroup")
        assert flow.inputs["trafficType"] == "ALL"
        assert flow.inputs["logDestination"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{group.id}"
        assert group.inputs["retentionInDays"] == days


def test_vpc_has_dns_support(production_stack: Render) -> None:
    vpc = production_stack.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["enableDnsSupport"] is True and vpc.inputs["enableDnsHostnames"] is True


def test_explicit_azs_and_two_az_network_render(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        Network(
            "n",
            NetworkArgs(
                cidr_block="10.1.0.0/20",
                az_count=2,
                availability_zones=["eu-west-1a", "eu-west-1c"],
                nat="single",
                interface_endpoints=False,
                region="eu-west-1",
            ),
        )

    stack = render_program(program)
    assert {s.inputs["availabilityZone"] for s in stack.by_type(SUBNET)} == {"eu-west-1a", "eu-west-1c"}
    assert len(stack.by_type(SUBNET)) == 6
    assert stack.one(ENDPOINT).inputs["serviceName"] == "com.amazonaws.eu-west-1.s3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"az_count": 1}, "az_count\n  Input should be greater than or equal to 2"),
        ({"nat": "none"}, "'single' or 'per_az'"),
        ({"cidr_block": "10.0.0.0/24"}, "AWS subnets must be /28 or larger"),
        ({"availability_zones": ["a", "b"]}, "availabilityZones lists 2 zones but azCount is 3"),
        (
            {
                "subnet_cidrs": {
                    "public": ["10.0.0.0/24"] * 3,
                    "private": ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"],
                    "database": ["10.0.4.0/24", "10.0.5.0/24", "10.0.6.0/24"],
                }
            },
            "overlaps",
        ),
    ],
)
def test_network_args_reject_bad_layouts(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NetworkArgs(**kwargs)


def test_computed_layout_is_aligned_and_leaves_room() -> None:
    layout = plan_subnets("10.0.0.0/16", 3)
    assert [str(n) for n in layout["private"]] == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    assert all(n.prefixlen == 22 for n in layout["public"])
    assert all(n.prefixlen == 24 for n in layout["database"])
    with pytest.raises(ValueError, match=r"need .* addresses but 10\.0\.0\.0/20 has 4096"):
        plan_subnets("10.0.0.0/20", 6, {"private": 2, "public": 4, "database": 6})


def test_network_outputs_resolve(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        n = Network("n", NetworkArgs(region="us-east-1", nat="single", interface_endpoints=False))
        pulumi.export("private", n.private_subnet_ids)
        pulumi.export("azs", n.availability_zones)

    stack = render_program(program)
    private_ids = {s.id for s in stack.by_type(SUBNET) if s.inputs["tags"]["mlplat.io/tier"] == "private"}
    assert set(stack.outputs["private"]) == private_ids
    assert stack.outputs["azs"] == ["us-east-1a", "us-east-1b", "us-east-1c"]
