"""EKS Kubernetes versions and their support windows: which versions a new cluster should (not) start on.

A minor version gets 14 months of EKS standard support from its EKS release, then 12 months of extended support
(billed per cluster hour at several times the standard control-plane price), then EKS upgrades the control plane
itself. Dates are UTC; billing for extended support starts at the beginning of the end-of-standard-support day.

Source: the "Amazon EKS Kubernetes release calendar" in the EKS user guide
(https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html, awsdocs/amazon-eks-user-guide
``latest/ug/versioning/kubernetes-versions.adoc``) for 1.29-1.34; 1.35 from endoflife.date/amazon-eks and the
aws-samples EKS operation-review calendar (verified there 2026-04-24). Checked 2026-11-29. 1.36 is available on EKS
(its add-ons and AMIs are published) but its dates were not found; add it when they are.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

SupportStatus = Literal["standard", "extended", "unsupported"]
CHECKED = dt.date(2026, 11, 29)
SOURCE = "https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html#kubernetes-release-calendar"


@dataclass(frozen=True)
class EksVersion:
    """One EKS Kubernetes minor version: released on EKS, end of standard support, end of extended support."""

    released: dt.date
    standard_support_end: dt.date
    extended_support_end: dt.date


EKS_VERSIONS: dict[str, EksVersion] = {
    "1.29": EksVersion(dt.date(2024, 1, 23), dt.date(2025, 3, 23), dt.date(2026, 3, 23)),
    "1.30": EksVersion(dt.date(2024, 5, 23), dt.date(2025, 7, 23), dt.date(2026, 7, 23)),
    "1.31": EksVersion(dt.date(2024, 9, 26), dt.date(2025, 11, 26), dt.date(2026, 11, 26)),
    "1.32": EksVersion(dt.date(2025, 1, 23), dt.date(2026, 3, 23), dt.date(2027, 3, 23)),
    "1.33": EksVersion(dt.date(2025, 5, 29), dt.date(2026, 7, 29), dt.date(2027, 7, 29)),
    "1.34": EksVersion(dt.date(2025, 10, 2), dt.date(2026, 12, 2), dt.date(2027, 12, 2)),
    "1.35": EksVersion(dt.date(2026, 1, 27), dt.date(2027, 3, 27), dt.date(2028, 3, 27)),
}


class UnknownVersion(LookupError):
    """A version newer than the table: its support dates are not recorded yet."""


def _minor(version: str) -> int:
    major, _, minor = version.partition(".")
    if major != "1" or not minor.isdigit():
        raise ValueError(f"{version!r} is not a Kubernetes minor version such as '1.35'")
    return int(minor)


def support_status(version: str, on: dt.date | None = None) -> SupportStatus:
    """EKS support of ``version`` on the day ``on`` (default today, UTC).

    ``standard`` until the end-of-standard-support day, ``extended`` from that day (billing starts then) until the
    end of extended support, ``unsupported`` from then on, and for versions older than the table. Raises
    :class:`UnknownVersion` for a version newer than the table.
    """
    day = on or dt.datetime.now(dt.UTC).date()
    entry = EKS_VERSIONS.get(version)
    if entry is None:
        oldest = min(EKS_VERSIONS, key=_minor)
        if _minor(version) < _minor(oldest):
            return "unsupported"
        raise UnknownVersion(
            f"Kubernetes {version} is not in mlplat.components.k8s_versions.EKS_VERSIONS "
            f"(checked {CHECKED}); add its dates from {SOURCE}"
        )
    if day < entry.standard_support_end:
        return "standard"
    if day < entry.extended_support_end:
        return "extended"
    return "unsupported"
