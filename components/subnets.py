"""Subnet CIDR planning: one public, private and database subnet per AZ, carved from the VPC CIDR.

Pure functions, shared by the :class:`~mlplat.components.network.Network` component and the stack config
validation, so a bad layout fails at config time with the same message a team would see from the component.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

TIERS: tuple[str, ...] = ("public", "private", "database")
DEFAULT_NEWBITS: Mapping[str, int] = {"private": 3, "public": 6, "database": 8}
MAX_SUBNET_PREFIX = 28  # AWS's smallest subnet


def plan_subnets(
    vpc_cidr: str | ipaddress.IPv4Network,
    az_count: int,
    newbits: Mapping[str, int] = DEFAULT_NEWBITS,
    explicit: Mapping[str, Sequence[str | ipaddress.IPv4Network]] | None = None,
) -> dict[str, list[ipaddress.IPv4Network]]:
    """Each tier's subnets, one per AZ in AZ order.

    With ``explicit`` CIDRs, they are checked (one per AZ, inside the VPC, no overlaps). Otherwise each
    tier gets ``/vpc_prefix + newbits[tier]`` blocks, carved largest first and aligned on their own size,
    so no two overlap and the rest of the VPC stays free. Raises ``ValueError`` naming the problem.
    """
    vpc = ipaddress.IPv4Network(vpc_cidr, strict=True)
    if explicit is not None:
        return _check_explicit(vpc, az_count, explicit)
    missing = [t for t in TIERS if t not in newbits]
    if missing:
        raise ValueError(f"subnetNewbits is missing {missing}; give bits for each of {list(TIERS)}")
    prefixes = {t: vpc.prefixlen + newbits[t] for t in TIERS}
    for tier, prefix in prefixes.items():
        if prefix > MAX_SUBNET_PREFIX:
            raise ValueError(
                f"subnetNewbits.{tier}={newbits[tier]} gives /{prefix} subnets; AWS subnets must be "
                f"/{MAX_SUBNET_PREFIX} or larger, so use at most {MAX_SUBNET_PREFIX - vpc.prefixlen}"
            )
    needed = sum(az_count * 2 ** (32 - p) for p in prefixes.values())
    if needed > vpc.num_addresses:
        raise ValueError(
            f"{az_count} AZs x (/{prefixes['private']} private + /{prefixes['public']} public + "
            f"/{prefixes['database']} database) need {needed} addresses but {vpc} has {vpc.num_addresses}; "
            "use a larger cidr, fewer AZs or larger subnetNewbits"
        )
    layout: dict[str, list[ipaddress.IPv4Network]] = {t: [] for t in TIERS}
    cursor = int(vpc.network_address)
    for tier in sorted(TIERS, key=lambda t: prefixes[t]):
        size = 2 ** (32 - prefixes[tier])
        for _ in range(az_count):
            cursor = -(-cursor // size) * size  # align up to the block size
            layout[tier].append(ipaddress.IPv4Network((cursor, prefixes[tier])))
            cursor += size
    return layout


def _check_explicit(
    vpc: ipaddress.IPv4Network, az_count: int, explicit: Mapping[str, Sequence[str | ipaddress.IPv4Network]]
) -> dict[str, list[ipaddress.IPv4Network]]:
    layout: dict[str, list[ipaddress.IPv4Network]] = {}
    for tier in TIERS:
        nets = [ipaddress.IPv4Network(n, strict=True) for n in explicit.get(tier, [])]
        if len(nets) != az_count:
            raise ValueError(f"subnets.{tier} lists {len(nets)} CIDRs but azCount is {az_count}; give one per AZ")
        for net in nets:
            if not net.subnet_of(vpc):
                raise ValueError(f"subnets.{tier}: {net} is outside the VPC CIDR {vpc}")
            if net.prefixlen > MAX_SUBNET_PREFIX:
                raise ValueError(f"subnets.{tier}: {net} is smaller than /{MAX_SUBNET_PREFIX}, AWS's minimum")
        layout[tier] = nets
    flat = [(tier, net) for tier in TIERS for net in layout[tier]]
    for i, (tier_a, a) in enumerate(flat):
        for tier_b, b in flat[i + 1 :]:
            if a.overlaps(b):
                raise ValueError(f"subnets.{tier_a} {a} overlaps subnets.{tier_b} {b}")
    return layout


# Ranges that no client on the internet connects from: an allowlist naming one admits nobody (RFC 5737 and
# RFC 3849 documentation ranges are placeholders copied from examples; RFC 1918/6598 and the like are not routed).
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def public_source_problem(cidr: str) -> str | None:
    """Why ``cidr`` cannot be the source range of traffic to a public endpoint, or None when it can be.

    Traffic reaching an AWS public endpoint carries public source addresses, so a documentation range (a
    placeholder from an example), a private, shared, loopback or link-local range admits no one.
    """
    net = ipaddress.ip_network(cidr, strict=False)
    if any(net.version == doc.version and net.subnet_of(doc) for doc in _DOCUMENTATION):  # type: ignore[arg-type]
        return (
            f"{cidr} is a documentation range (RFC 5737/3849), a placeholder that no real client comes from; "
            "put the public CIDRs of your VPN, office or CI runners"
        )
    if net.prefixlen and not net.is_global:
        return (
            f"{cidr} is not a public range (private, shared, loopback or reserved addresses never reach a "
            "public endpoint); list public CIDRs, or make the endpoint private and deploy from inside the VPC"
        )
    return None
