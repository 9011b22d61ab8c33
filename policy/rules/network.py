"""Security groups: no ingress from the whole internet, except to a load balancer's group on 80/443."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mlplat.policy.framework import MANDATORY, Resource, Rule, StackRule, Violation, as_list, linked

OPEN_IPV4 = "0.0.0.0/0"
OPEN_IPV6 = "::/0"
LOAD_BALANCER_PORTS = frozenset({80, 443})

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOAD_BALANCER_TYPES = frozenset(
    {
        "aws:lb/loadBalancer:LoadBalancer",
        "aws:alb/loadBalancer:LoadBalancer",
        "aws:elb/loadBalancer:LoadBalancer",
    }
)


@dataclass(frozen=True)
class _Ingress:
    owner: Resource
    group_urn: str | None
    protocol: str
    from_port: int
    to_port: int
    open_cidrs: tuple[str, ...]


def _open_cidrs(v4: Iterable[Any], v6: Iterable[Any]) -> tuple[str, ...]:
    found = [c for c in v4 if c == OPEN_IPV4] + [c for c in v6 if c == OPEN_IPV6]
    return tuple(str(c) for c in found)


def _ingresses(stack: Sequence[Resource]) -> Iterator[_Ingress]:
    groups = frozenset({SECURITY_GROUP})
    for res in stack:
        if res.type == SECURITY_GROUP:
            for rule in as_list(res.inputs.get("ingress")):
                yield _Ingress(
                    res,
                    res.urn,
                    str(rule.get("protocol", "")),
                    int(rule.get("fromPort", 0)),
                    int(rule.get("toPort", 0)),
                    _open_cidrs(as_list(rule.get("cidrBlocks")), as_list(rule.get("ipv6CidrBlocks"))),
                )
        elif res.type == SECURITY_GROUP_RULE and res.inputs.get("type") == "ingress":
            group = next((g.urn for g in linked(stack, res, groups)), None)
            yield _Ingress(
                res,
                group,
                str(res.inputs.get("protocol", "")),
                int(res.inputs.get("fromPort", 0)),
                int(res.inputs.get("toPort", 0)),
                _open_cidrs(as_list(res.inputs.get("cidrBlocks")), as_list(res.inputs.get("ipv6CidrBlocks"))),
            )
        elif res.type == INGRESS_RULE:
            group = next((g.urn for g in linked(stack, res, groups)), None)
            yield _Ingress(
                res,
                group,
                str(res.inputs.get("ipProtocol", "")),
                int(res.inputs.get("fromPort", 0) or 0),
                int(res.inputs.get("toPort", 0) or 0),
                _open_cidrs(as_list(res.inputs.get("cidrIpv4")), as_list(res.inputs.get("cidrIpv6"))),
            )


def _web_ports_only(ingress: _Ingress) -> bool:
    if ingress.protocol in ("-1", "all"):
        return False
    return ingress.from_port == ingress.to_port and ingress.from_port in LOAD_BALANCER_PORTS


def no_open_ingress(stack: Sequence[Resource]) -> Iterator[tuple[Resource, Violation]]:
    """No ingress from the whole internet, except to a load balancer's group on 80/443."""
    lb_groups = {
        g.urn for lb in stack if lb.type in LOAD_BALANCER_TYPES for g in linked(stack, lb, frozenset({SECURITY_GROUP}))
    }
    for ingress in _ingresses(stack):
        if not ingress.open_cidrs:
            continue
        if _web_ports_only(ingress) and ingress.group_urn in lb_groups:
            continue
        ports = "all ports" if ingress.protocol in ("-1", "all") else f"ports {ingress.from_port}-{ingress.to_port}"
        yield (
            ingress.owner,
            Violation(
                f"ingress from {', '.join(ingress.open_cidrs)} on {ports}",
                "allow only the VPC CIDR or named security groups; open ingress is allowed only on 80/443 to a "
                "load balancer's security group",
            ),
        )


RULES: tuple[Rule, ...] = (
    StackRule(
        "no-open-ingress", "no ingress from 0.0.0.0/0 except to load balancers on 80/443", MANDATORY, no_open_ingress
    ),
)
"""The network rules."""
