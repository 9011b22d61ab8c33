"""A monthly cost estimate of a rendered stack, from a dated, cited price table (``prices.json``).

Each priced resource becomes a :class:`CostLine` with two figures: *idle*, with every node group at its
minimum size, and *peak*, at its maximum. Usage the render cannot know (NAT data, S3 bytes, log volume) comes
from the table's per-environment assumptions, which the output names. Resources whose price is not in the
table are listed as unpriced rather than silently counted as free; those billed only by usage (an SNS topic, an SQS
queue) are named with their list price.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlplat.components.k8s_versions import UnknownVersion, support_status

PRICE_FILE = "prices.json"


def _eks_support(version: str) -> str:
    try:
        return support_status(version)
    except UnknownVersion:  # newer than the calendar mlplat ships: not in extended support yet
        return "standard"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionPrices(_Strict):
    """List prices of one region (USD)."""

    eks_cluster_hour: float
    eks_cluster_extended_support_hour: float
    """A control plane whose Kubernetes version has left standard support (EKS extended support)."""
    nat_gateway_hour: float
    nat_gateway_gb: float
    public_ipv4_hour: float
    interface_endpoint_az_hour: float
    interface_endpoint_gb: float
    alb_hour: float
    alb_lcu_hour: float
    s3_standard_gb_month: float
    cloudwatch_logs_ingest_gb: float
    cloudwatch_logs_storage_gb_month: float
    cloudwatch_alarm_metric_month: float
    """A standard-resolution (period of 60 s or more) metric alarm, per metric it watches."""
    cloudwatch_alarm_high_resolution_metric_month: float
    """A high-resolution (period under 60 s) metric alarm, per metric it watches."""
    sns_publish_million: float
    """A standard SNS topic has no monthly charge: only publishes (and deliveries), by usage."""
    sqs_request_million: float
    """A standard SQS queue has no monthly charge: only requests, by usage."""
    kms_key_month: float
    ecr_storage_gb_month: float
    ebs_gb_month: dict[str, float]
    rds_storage_gb_month: dict[str, float]
    ec2_hour: dict[str, float]
    rds_hour: dict[str, float]


class SpotAssumption(_Strict):
    """The share of the on-demand price paid on spot, per instance family."""

    comment: str
    default_fraction: float = Field(gt=0, le=1)
    fraction_by_family: dict[str, float]

    def fraction(self, instance_type: str) -> float:
        """The spot fraction for ``instance_type`` (by its family, e.g. ``g5``)."""
        return self.fraction_by_family.get(instance_type.split(".", 1)[0], self.default_fraction)


class Usage(_Strict):
    """Monthly usage the render cannot know, for one environment."""

    nat_data_gb: float = Field(ge=0)
    interface_endpoint_data_gb: float = Field(ge=0)
    s3_stored_gb: float = Field(ge=0)
    log_ingest_gb_per_group: float = Field(ge=0)
    control_plane_log_gb: float = Field(ge=0)
    ecr_stored_gb_per_repository: float = Field(ge=0)
    load_balancer_lcu: float = Field(ge=0)
    default_root_volume_gb: float = Field(ge=0)


class UsageAssumptions(_Strict):
    """Usage assumptions by environment."""

    comment: str
    environments: dict[str, Usage]


class NotPriced(_Strict):
    """What the config accepts but the table does not price (no verified list price), and why."""

    comment: str
    ec2: dict[str, str]


class Source(_Strict):
    """Where some of the table's figures come from, and how current they are."""

    url: str = Field(pattern=r"^https://")
    as_of: str = Field(pattern=r"^\d{4}-\d{2}(-\d{2})?$")
    """The date the figures were current at the source (``YYYY-MM`` or ``YYYY-MM-DD``)."""
    covers: list[str] = Field(min_length=1)
    """The :class:`RegionPrices` fields (or ``spot``) whose figures come from here."""
    via: str | None = None
    """Where the figures were read, when not on the page itself (e.g. a table generated from AWS's Price List API)."""
    note: str | None = None


SOURCED = frozenset(RegionPrices.model_fields) | {"spot"}
"""Every figure of the table a source must cover: each region's prices, and the spot assumption."""


class PriceTable(_Strict):
    """The whole price file: when, from where, and the prices per region."""

    as_of: str
    """The oldest of the sources' dates: every figure is at least this current."""
    currency: str
    hours_per_month: float
    note: str
    sources: dict[str, Source]
    regions: dict[str, RegionPrices]
    spot: SpotAssumption
    usage: UsageAssumptions
    not_priced: NotPriced

    @model_validator(mode="after")
    def _sourced(self) -> PriceTable:
        # A figure without a source (or with two) could not be checked against anything; refuse the table.
        covered = [field for source in self.sources.values() for field in source.covers]
        missing, unknown = SOURCED - set(covered), set(covered) - SOURCED
        twice = {field for field in covered if covered.count(field) > 1}
        if missing or unknown or twice:
            raise ValueError(
                f"sources must cover each figure once: without a source {sorted(missing)}, "
                f"unknown {sorted(unknown)}, covered twice {sorted(twice)}"
            )
        oldest = min((source.as_of for source in self.sources.values()), default=self.as_of)
        if self.as_of != oldest[: len(self.as_of)]:
            raise ValueError(f"as_of {self.as_of!r} must be the oldest of the sources' dates ({oldest!r})")
        return self


class PriceTableError(ValueError):
    """The price file is missing, malformed, or has no entry the stack needs."""


def load_prices(text: str | None = None) -> PriceTable:
    """The packaged price table (or one given as JSON text), validated."""
    if text is None:
        text = resources.files("mlplat.review").joinpath(PRICE_FILE).read_text()
    try:
        return PriceTable.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PriceTableError(f"invalid price table: {problems}") from None


@dataclass(frozen=True)
class CostLine:
    """One resource's monthly cost at idle (min nodes) and peak (max nodes)."""

    name: str
    type: str
    what: str
    idle: float
    peak: float

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "name": self.name,
            "type": self.type,
            "what": self.what,
            "idle": round(self.idle, 2),
            "peak": round(self.peak, 2),
        }


@dataclass
class Estimate:
    """A stack's monthly estimate: a line per priced resource, totals, and what could not be priced."""

    stack: str
    environment: str
    region: str
    as_of: str
    lines: list[CostLine] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    assumptions: dict[str, float] = field(default_factory=dict)
    unpriced_keys: list[tuple[str, str]] = field(default_factory=list)
    """(type, name) of each resource in :attr:`unpriced`: left out of the totals, which are then incomplete."""
    usage_priced: list[str] = field(default_factory=list)
    """Resources with no monthly charge, billed only by a usage the render cannot know (an SNS topic's publishes, an
    SQS queue's requests): each named with its list price, in the totals at $0, never silently."""

    @property
    def complete(self) -> bool:
        """Whether every resource of a priced type is in the totals."""
        return not self.unpriced

    @property
    def idle(self) -> float:
        """Monthly total with every node group at its minimum."""
        return sum(line.idle for line in self.lines)

    @property
    def peak(self) -> float:
        """Monthly total with every node group at its maximum."""
        return sum(line.peak for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "stack": self.stack,
            "environment": self.environment,
            "region": self.region,
            "prices_as_of": self.as_of,
            "idle_monthly": round(self.idle, 2),
            "peak_monthly": round(self.peak, 2),
            "complete": self.complete,
            "lines": [line.to_json() for line in self.lines],
            "unpriced": self.unpriced,
            "usage_priced": self.usage_priced,
            "assumptions": self.assumptions,
        }


def _region_of(document: Mapping[str, Any]) -> str | None:
    for record in document.get("resources") or []:
        if record["type"] == "pulumi:providers:aws":
            region = (record.get("inputs") or {}).get("region")
            if region:
                return str(region)
    return None


class _Pricer:
    """Prices one render's resources with one region's table."""

    def __init__(
        self, table: PriceTable, prices: RegionPrices, usage: Usage, records: Sequence[Mapping[str, Any]]
    ) -> None:
        self.table, self.prices, self.usage = table, prices, usage
        self.hours = table.hours_per_month
        self.by_urn = {r["urn"]: r for r in records}
        self.records = records
        self.unpriced: list[str] = []
        self.unpriced_keys: list[tuple[str, str]] = []
        self.usage_priced: list[str] = []
        self.storage_classes = _storage_classes(records)
        nats = [r for r in records if r["type"] == "aws:ec2/natGateway:NatGateway"]
        self.nat_share = usage.nat_data_gb / len(nats) if nats else 0.0
        endpoints = [r for r in records if _interface_endpoint(r)]
        self.endpoint_share = usage.interface_endpoint_data_gb / len(endpoints) if endpoints else 0.0

    def _deps(self, record: Mapping[str, Any], type_: str) -> list[Mapping[str, Any]]:
        urns = (record.get("options") or {}).get("depends_on") or []
        return [self.by_urn[u] for u in urns if u in self.by_urn and self.by_urn[u]["type"] == type_]

    def line(self, record: Mapping[str, Any]) -> CostLine | None:
        """The cost line of a record, or None when it costs nothing by itself."""
        type_ = record["type"]
        if _interface_endpoint(record):
            return self._interface_endpoint_line(record)
        if type_ == "kubernetes:networking.k8s.io/v1:Ingress":
            return self._ingress(record) if self._is_alb_owner(record) else None
        price = _PRICED_BY_TYPE.get(type_)
        return None if price is None else price(self, record)

    def _fixed(self, record: Mapping[str, Any], what: str, monthly: float) -> CostLine:
        return CostLine(record["name"], record["type"], what, monthly, monthly)

    def _inputs(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return record.get("inputs") or {}

    def _eks_control_plane(self, record: Mapping[str, Any]) -> CostLine:
        inputs, p = self._inputs(record), self.prices
        logs = self.usage.control_plane_log_gb if inputs.get("enabledClusterLogTypes") else 0.0
        version = str(inputs.get("version") or "")
        extended = bool(version) and _eks_support(version) != "standard"
        control = p.eks_cluster_extended_support_hour if extended else p.eks_cluster_hour
        support = f" (Kubernetes {version}: extended support)" if extended else ""
        return self._fixed(
            record,
            f"EKS control plane{support} + {logs:g} GB control-plane logs",
            control * self.hours + logs * p.cloudwatch_logs_ingest_gb,
        )

    def _instance(self, record: Mapping[str, Any]) -> CostLine | None:
        instance_type = self._inputs(record).get("instanceType")
        hourly = self._ec2(str(instance_type), record)
        return None if hourly is None else self._fixed(record, f"1 x {instance_type}", hourly * self.hours)

    def _nat_gateway(self, record: Mapping[str, Any]) -> CostLine:
        p = self.prices
        return self._fixed(
            record,
            f"NAT gateway + {self.nat_share:,.0f} GB processed",
            p.nat_gateway_hour * self.hours + self.nat_share * p.nat_gateway_gb,
        )

    def _eip(self, record: Mapping[str, Any]) -> CostLine:
        return self._fixed(record, "public IPv4 address", self.prices.public_ipv4_hour * self.hours)

    def _interface_endpoint_line(self, record: Mapping[str, Any]) -> CostLine:
        p = self.prices
        azs = max(1, len(self._inputs(record).get("subnetIds") or []))
        monthly = p.interface_endpoint_az_hour * self.hours * azs + self.endpoint_share * p.interface_endpoint_gb
        return self._fixed(record, f"interface endpoint in {azs} AZ(s) + {self.endpoint_share:,.0f} GB", monthly)

    def _bucket(self, record: Mapping[str, Any]) -> CostLine:
        gb = self.usage.s3_stored_gb
        return self._fixed(record, f"{gb:g} GB S3 Standard (assumed)", gb * self.prices.s3_standard_gb_month)

    def _log_group(self, record: Mapping[str, Any]) -> CostLine:
        p, gb = self.prices, self.usage.log_ingest_gb_per_group
        return self._fixed(
            record,
            f"{gb:g} GB/month ingested (assumed)",
            gb * (p.cloudwatch_logs_ingest_gb + p.cloudwatch_logs_storage_gb_month),
        )

    def _alarm(self, record: Mapping[str, Any]) -> CostLine:
        p = self.prices
        metrics, period = _alarm_metrics(self._inputs(record))
        high = period is not None and period < 60
        per_metric = p.cloudwatch_alarm_high_resolution_metric_month if high else p.cloudwatch_alarm_metric_month
        resolution = "high" if high else "standard"
        return self._fixed(
            record, f"CloudWatch alarm, {metrics} metric(s), {resolution} resolution", metrics * per_metric
        )

    def _sns_topic(self, record: Mapping[str, Any]) -> None:
        self.usage_priced.append(
            f"{record['name']}: SNS topic, no monthly charge; "
            f"{money(self.prices.sns_publish_million)} per million publishes (plus deliveries), "
            "by usage"
        )

    def _sqs_queue(self, record: Mapping[str, Any]) -> None:
        self.usage_priced.append(
            f"{record['name']}: SQS queue, no monthly charge; "
            f"{money(self.prices.sqs_request_million)} per million requests, by usage"
        )

    def _kms_key(self, record: Mapping[str, Any]) -> CostLine:
        return self._fixed(record, "customer-managed KMS key", self.prices.kms_key_month)

    def _repository(self, record: Mapping[str, Any]) -> CostLine:
        gb = self.usage.ecr_stored_gb_per_repository
        return self._fixed(record, f"{gb:g} GB images (assumed)", gb * self.prices.ecr_storage_gb_month)

    def _load_balancer(self, record: Mapping[str, Any]) -> CostLine:
        p, lcu = self.prices, self.usage.load_balancer_lcu
        return self._fixed(record, f"load balancer + {lcu:g} LCU", (p.alb_hour + lcu * p.alb_lcu_hour) * self.hours)

    def _ingress(self, record: Mapping[str, Any]) -> CostLine:
        p, lcu = self.prices, self.usage.load_balancer_lcu
        group = _alb_group(record)
        what = f"ALB (AWS Load Balancer Controller{', group ' + group if group else ''}) + "
        return self._fixed(record, what + f"{lcu:g} LCU", (p.alb_hour + lcu * p.alb_lcu_hour) * self.hours)

    def _release(self, record: Mapping[str, Any]) -> CostLine | None:
        claims = list(_volume_claims(self._inputs(record).get("values")))
        if not claims:
            return None
        parts, monthly = [], 0.0
        for size, copies, class_name in claims:
            volume_type = self._volume_type(record, class_name)
            per_gb = None if volume_type is None else self._ebs(volume_type, record)
            if volume_type is None or per_gb is None:
                return None  # named unpriced, whole: a chart's volumes are one line
            parts.append(f"{copies} x {size:g} GB {volume_type}")
            monthly += size * copies * per_gb
        return self._fixed(record, " + ".join(parts) + " (persistent volumes in its values)", monthly)

    def _volume_claim(self, record: Mapping[str, Any]) -> CostLine | None:
        spec = self._inputs(record).get("spec") or {}
        requested = _gib(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        if requested is None:
            self.skip(record, "persistent volume claim without a storage request")
            return None
        volume_type = self._volume_type(record, spec.get("storageClassName"))
        per_gb = None if volume_type is None else self._ebs(volume_type, record)
        return (
            None
            if per_gb is None
            else self._fixed(record, f"{requested:g} GB {volume_type} persistent volume", requested * per_gb)
        )

    def _volume(self, record: Mapping[str, Any]) -> CostLine | None:
        inputs = self._inputs(record)
        gb = float(inputs.get("size") or 0)
        volume_type = str(inputs.get("type") or "gp2")  # aws.ebs.Volume's documented default type
        per_gb = self._ebs(volume_type, record)
        return None if per_gb is None else self._fixed(record, f"{gb:g} GB {volume_type}", gb * per_gb)

    def _volume_type(self, record: Mapping[str, Any], class_name: Any) -> str | None:
        """The EBS type behind a StorageClass name (None: the default class), or None, named unpriced."""
        key = None if class_name in (None, "") else str(class_name)
        volume_type = self.storage_classes.get(key)
        if volume_type is None:
            which = f"StorageClass {key!r}" if key else "the default StorageClass"
            self.skip(record, f"{which} is not defined in the render, so its EBS volume type is unknown")
        return volume_type

    def _is_alb_owner(self, record: Mapping[str, Any]) -> bool:
        """Whether this Ingress gets its own ALB: class ``alb``, and the first of its ingress group."""
        if not _is_alb_ingress(record):
            return False
        group = _alb_group(record)
        if not group:
            return True
        first = min(r["urn"] for r in self.records if _is_alb_ingress(r) and _alb_group(r) == group)
        return bool(record["urn"] == first)

    def skip(self, record: Mapping[str, Any], why: str) -> None:
        """Name a resource that cannot be priced (never counted as free)."""
        self.unpriced.append(f"{record['name']}: {why}")
        self.unpriced_keys.append((record["type"], record["name"]))

    def _ec2(self, instance_type: str, record: Mapping[str, Any]) -> float | None:
        hourly = self.prices.ec2_hour.get(instance_type)
        if hourly is None:
            self.skip(record, f"no EC2 price for {instance_type!r} in the table")
        return hourly

    def _ebs(self, volume_type: str, record: Mapping[str, Any]) -> float | None:
        per_gb = self.prices.ebs_gb_month.get(volume_type)
        if per_gb is None:
            self.skip(record, f"no EBS price for volume type {volume_type!r} in the table")
        return per_gb

    def _node_group(self, record: Mapping[str, Any]) -> CostLine | None:
        inputs, name = record.get("inputs") or {}, record["name"]
        types = [str(t) for t in inputs.get("instanceTypes") or []]
        if not types:
            self.skip(record, "node group without instanceTypes (set in its launch template?)")
            return None
        # The first listed type is the one the group prefers; price the group as all nodes of it.
        hourly = self._ec2(types[0], record)
        if hourly is None:
            return None
        spot = str(inputs.get("capacityType", "ON_DEMAND")).upper() == "SPOT"
        if spot:
            hourly *= self.table.spot.fraction(types[0])
        scaling = inputs.get("scalingConfig") or {}
        low, high = int(scaling.get("minSize", 0)), int(scaling.get("maxSize", scaling.get("minSize", 0)))
        disk_gb, disk_type = self._root_volume(record)
        disk_per_gb = self._ebs(disk_type, record)
        if disk_per_gb is None:
            return None
        per_node = hourly * self.hours + disk_gb * disk_per_gb
        market = f"spot at {self.table.spot.fraction(types[0]):.0%} of on-demand" if spot else "on-demand"
        what = f"{low}-{high} x {types[0]} {market}, {disk_gb:g} GB {disk_type} each"
        return CostLine(name, record["type"], what, low * per_node, high * per_node)

    def _root_volume(self, record: Mapping[str, Any]) -> tuple[float, str]:
        for template in self._deps(record, "aws:ec2/launchTemplate:LaunchTemplate"):
            for mapping in (template.get("inputs") or {}).get("blockDeviceMappings") or []:
                ebs = mapping.get("ebs") or {}
                if ebs.get("volumeSize"):
                    return float(ebs["volumeSize"]), str(ebs.get("volumeType", "gp3"))
        inputs = record.get("inputs") or {}
        if inputs.get("diskSize"):
            return float(inputs["diskSize"]), "gp3"
        return self.usage.default_root_volume_gb, "gp2"  # EKS's default root volume without a launch template

    def _rds(self, record: Mapping[str, Any]) -> CostLine | None:
        inputs, name = record.get("inputs") or {}, record["name"]
        cls = str(inputs.get("instanceClass"))
        hourly = self.prices.rds_hour.get(cls)
        if hourly is None:
            self.skip(record, f"no RDS price for {cls!r} in the table")
            return None
        copies = 2 if inputs.get("multiAz") is True else 1
        storage_type = str(inputs.get("storageType") or "gp2")  # RDS's default without storage_type
        gb = float(inputs.get("allocatedStorage") or 0)
        per_gb = self.prices.rds_storage_gb_month.get(storage_type)
        if per_gb is None:
            self.skip(record, f"no RDS storage price for {storage_type!r} in the table")
            return None
        storage = gb * per_gb
        monthly = copies * (hourly * self.hours + storage)
        what = f"{cls}{' multi-AZ' if copies == 2 else ''}, {gb:g} GB {storage_type}"
        return CostLine(name, record["type"], what, monthly, monthly)


_PRICED_BY_TYPE: dict[str, Callable[[_Pricer, Mapping[str, Any]], CostLine | None]] = {
    "eks:index:Cluster": _Pricer._eks_control_plane,
    "aws:eks/cluster:Cluster": _Pricer._eks_control_plane,
    "aws:eks/nodeGroup:NodeGroup": _Pricer._node_group,
    "eks:index:ManagedNodeGroup": _Pricer._node_group,
    "aws:ec2/instance:Instance": _Pricer._instance,
    "aws:ec2/natGateway:NatGateway": _Pricer._nat_gateway,
    "aws:ec2/eip:Eip": _Pricer._eip,
    "aws:rds/instance:Instance": _Pricer._rds,
    "aws:s3/bucket:Bucket": _Pricer._bucket,
    "aws:s3/bucketV2:BucketV2": _Pricer._bucket,
    "aws:cloudwatch/logGroup:LogGroup": _Pricer._log_group,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _Pricer._alarm,
    "aws:sns/topic:Topic": _Pricer._sns_topic,
    "aws:sqs/queue:Queue": _Pricer._sqs_queue,
    "aws:kms/key:Key": _Pricer._kms_key,
    "aws:ecr/repository:Repository": _Pricer._repository,
    "aws:lb/loadBalancer:LoadBalancer": _Pricer._load_balancer,
    "aws:alb/loadBalancer:LoadBalancer": _Pricer._load_balancer,
    "kubernetes:helm.sh/v3:Release": _Pricer._release,
    "kubernetes:core/v1:PersistentVolumeClaim": _Pricer._volume_claim,
    "aws:ebs/volume:Volume": _Pricer._volume,
}
"""How each priced type is priced (an interface VPC endpoint and an ALB-owning Ingress are told apart by their
inputs, in :meth:`_Pricer.line`)."""


def _alarm_metrics(inputs: Mapping[str, Any]) -> tuple[int, int | None]:
    """(metrics billed, shortest period in seconds) of a metric alarm: one metric, or each metric its metric-math
    queries read (CloudWatch bills an alarm per metric; Infracost's cloudwatch_metric_alarm counts the same)."""
    queries = [q.get("metric") for q in inputs.get("metricQueries") or [] if isinstance(q, Mapping)]
    metrics = [m for m in queries if isinstance(m, Mapping)]
    periods = [int(m["period"]) for m in metrics if m.get("period")]
    if inputs.get("period"):
        periods.append(int(inputs["period"]))
    count = max(1, len(metrics))
    if inputs.get("comparisonOperator") in _ANOMALY_BAND_OPERATORS:
        count *= 3  # an anomaly detection alarm bills three metrics: the metric and the band's two
    return count, min(periods) if periods else None


_ANOMALY_BAND_OPERATORS = frozenset(
    {"LessThanLowerOrGreaterThanUpperThreshold", "LessThanLowerThreshold", "GreaterThanUpperThreshold"}
)


def _gib(quantity: Any) -> float | None:
    """A Kubernetes storage quantity (``200Gi``, ``1Ti``, ``500M``) in GB (GiB, as EBS bills), or None."""
    text = str(quantity or "").strip()
    units = {
        "Ki": 1 / 1024**2,
        "Mi": 1 / 1024,
        "Gi": 1.0,
        "Ti": 1024.0,
        "K": 1e3 / 1024**3,
        "M": 1e6 / 1024**3,
        "G": 1e9 / 1024**3,
        "T": 1e12 / 1024**3,
    }
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * factor
            except ValueError:
                return None
    try:
        return float(text) / 1024**3 if text else None
    except ValueError:
        return None


def _storage_classes(records: Sequence[Mapping[str, Any]]) -> dict[str | None, str]:
    """StorageClass name -> EBS volume type, from the render: StorageClass objects and pulumi-eks's
    ``storageClasses``; the key None is the default class, when exactly one is marked default."""
    classes: dict[str | None, str] = {}
    defaults: set[str] = set()
    for record in records:
        inputs = record.get("inputs") or {}
        if record["type"] == "kubernetes:storage.k8s.io/v1:StorageClass":
            metadata = inputs.get("metadata") or {}
            name = str(metadata.get("name") or record["name"])
            volume_type = (inputs.get("parameters") or {}).get("type")
            if volume_type:  # without one, the type is the driver version's default: not known from the render
                classes[name] = str(volume_type)
            annotations = metadata.get("annotations") or {}
            if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                defaults.add(name)
        elif record["type"] == "eks:index:Cluster":
            declared = inputs.get("storageClasses")
            if isinstance(declared, str):  # one class, named after its EBS type, and the default
                classes[declared] = declared
                defaults.add(declared)
            elif isinstance(declared, Mapping):
                for key, spec in declared.items():
                    spec = spec if isinstance(spec, Mapping) else {}
                    name = str((spec.get("metadata") or {}).get("name") or key)
                    if spec.get("type"):
                        classes[name] = str(spec["type"])
                    if spec.get("default"):
                        defaults.add(name)
    if len(defaults) == 1 and next(iter(defaults)) in classes:
        classes[None] = classes[next(iter(defaults))]
    return classes


def _volume_claims(values: Any) -> Iterator[tuple[float, int, str | None]]:
    """(GB, copies, StorageClass name) of each persistent volume a Helm chart's values ask for: ``storageSpec``
    volume claim templates (kube-prometheus-stack's Prometheus and Alertmanager), with the ``replicas`` beside
    them."""
    if isinstance(values, Mapping):
        template = values.get("storageSpec") or values.get("storage") or {}
        claim = template.get("volumeClaimTemplate") if isinstance(template, Mapping) else None
        if isinstance(claim, Mapping):
            spec = claim.get("spec") or {}
            size = _gib(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
            if size:
                class_name = spec.get("storageClassName")
                yield size, int(values.get("replicas") or 1), None if class_name is None else str(class_name)
        for key, value in values.items():
            if key not in ("storageSpec", "storage"):
                yield from _volume_claims(value)
    elif isinstance(values, list):
        for item in values:
            yield from _volume_claims(item)


def _is_alb_ingress(record: Mapping[str, Any]) -> bool:
    # The AWS Load Balancer Controller makes one ALB per Ingress (or per ingress group) of class "alb".
    if record["type"] != "kubernetes:networking.k8s.io/v1:Ingress":
        return False
    inputs = record.get("inputs") or {}
    annotations = (inputs.get("metadata") or {}).get("annotations") or {}
    return bool(
        (inputs.get("spec") or {}).get("ingressClassName") == "alb"
        or annotations.get("kubernetes.io/ingress.class") == "alb"
    )


def _alb_group(record: Mapping[str, Any]) -> str:
    annotations = ((record.get("inputs") or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get("alb.ingress.kubernetes.io/group.name", ""))


def _priced(record: Mapping[str, Any]) -> bool:
    """Whether the estimator would price this record in a priced region (a Helm release only with volumes)."""
    if record["type"] == "kubernetes:helm.sh/v3:Release":
        return bool(list(_volume_claims((record.get("inputs") or {}).get("values"))))
    return record["type"] in PRICED_TYPES or _interface_endpoint(record) or _is_alb_ingress(record)


def _interface_endpoint(record: Mapping[str, Any]) -> bool:
    return (
        record["type"] == "aws:ec2/vpcEndpoint:VpcEndpoint"
        and (record.get("inputs") or {}).get("vpcEndpointType") == "Interface"
    )


def estimate(document: Mapping[str, Any], environment: str, table: PriceTable | None = None) -> Estimate:
    """The monthly estimate of a render (``Render.to_json()``) in ``environment``'s usage assumptions."""
    table = table or load_prices()
    region = _region_of(document)
    if region is None:
        raise PriceTableError("the render has no AWS provider with a region, so there is nothing to price")
    prices = table.regions.get(region)
    if prices is None:
        raise PriceTableError(
            f"no prices for region {region!r} in the price table (as of {table.as_of}); "
            f"regions priced: {', '.join(sorted(table.regions))}"
        )
    usage = table.usage.environments.get(environment)
    if usage is None:
        raise PriceTableError(
            f"no usage assumptions for environment {environment!r}; "
            f"known: {', '.join(sorted(table.usage.environments))}"
        )
    records = [r for r in document.get("resources") or [] if r["type"] != "pulumi:pulumi:Stack"]
    pricer = _Pricer(table, prices, usage, records)
    result = Estimate(
        stack=str(document.get("stack", "?")),
        environment=environment,
        region=region,
        as_of=table.as_of,
        assumptions=usage.model_dump(),
    )
    for record in sorted(records, key=lambda r: (r["type"], r["name"])):
        line = pricer.line(record)
        if line is not None:
            result.lines.append(line)
    result.unpriced = pricer.unpriced
    result.unpriced_keys = pricer.unpriced_keys
    result.usage_priced = pricer.usage_priced
    return result


# Types the estimator prices (by type, or by its inputs: interface endpoints, ALB ingresses, Helm volumes).
PRICED_TYPES = frozenset(_PRICED_BY_TYPE)


def estimate_or_unpriced(document: Mapping[str, Any], table: PriceTable | None = None) -> Estimate | None:
    """:func:`estimate` in the render's own environment; where its region (or environment) has no prices, an
    estimate that names every resource of a priced type as unpriced instead of dropping the stack's cost.
    None for an empty render (a stack that does not exist on this side)."""
    from mlplat.policy.framework import environment_of

    records = [r for r in document.get("resources") or [] if r["type"] != "pulumi:pulumi:Stack"]
    if not records:
        return None
    table = table or load_prices()
    environment = environment_of(document)
    try:
        return estimate(document, environment, table)
    except PriceTableError as exc:
        result = Estimate(
            stack=str(document.get("stack", "?")),
            environment=environment,
            region=_region_of(document) or "?",
            as_of=table.as_of,
        )
        for record in sorted(records, key=lambda r: (r["type"], r["name"])):
            if _priced(record):
                result.unpriced.append(f"{record['name']}: {exc}")
                result.unpriced_keys.append((record["type"], record["name"]))
        return result


@dataclass(frozen=True)
class CostDelta:
    """How the monthly estimate moves, over the resources priced on both sides; what is left out is named."""

    base: Estimate | None
    head: Estimate | None
    idle_delta: float
    peak_delta: float
    left_out: list[str]

    @property
    def complete(self) -> bool:
        """Whether every resource of a priced type is counted on both sides."""
        return not self.left_out

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "base": self.base.to_json() if self.base else None,
            "head": self.head.to_json() if self.head else None,
            "idle_delta": round(self.idle_delta, 2),
            "peak_delta": round(self.peak_delta, 2),
            "complete": self.complete,
            "left_out": self.left_out,
        }

    def markdown(self) -> str:
        """The cost headline: totals, the delta, and (first, not folded) what is not priced."""

        def signed(value: float) -> str:
            return ("+" if value >= 0 else "-") + money(abs(value))

        def total(est: Estimate | None, attr: str) -> str:
            return money(0.0) if est is None else money(getattr(est, attr)) + ("" if est.complete else "*")

        mark = "" if self.complete else " (incomplete)"
        text = (
            f"**Cost{mark}:** idle {total(self.base, 'idle')} → {total(self.head, 'idle')} "
            f"({signed(self.idle_delta)}), peak {total(self.base, 'peak')} → {total(self.head, 'peak')} "
            f"({signed(self.peak_delta)}) per month"
        )
        either = self.head or self.base
        as_of = either.as_of if either is not None else "?"
        text += f", list prices as of {as_of}.\n"
        if self.left_out:
            text += "\n> [!WARNING]\n> **Not priced, left out of the totals (\\*) and of the delta:**\n" + "".join(
                f"> - {u}\n" for u in self.left_out
            )
        base_usage = set(self.base.usage_priced if self.base else [])
        head_usage = set(self.head.usage_priced if self.head else [])
        moved = [f"added: {u}" for u in sorted(head_usage - base_usage)] + [
            f"removed: {u}" for u in sorted(base_usage - head_usage)
        ]
        if moved:
            text += "\n**Usage-priced, $0 a month in the delta plus their usage:**\n" + "".join(
                f"- {u}\n" for u in moved
            )
        return text


def diff_costs(base: Estimate | None, head: Estimate | None) -> CostDelta | None:
    """The cost delta from ``base`` to ``head`` (None on a side: the stack does not exist there).

    A resource unpriced on either side is left out of both sides' sums, so a database upsized to a class the
    table lacks is never read as a saving; each is named."""
    if base is None and head is None:
        return None
    skip = {*(base.unpriced_keys if base else []), *(head.unpriced_keys if head else [])}

    def counted(est: Estimate | None, attr: str) -> float:
        return (
            0.0 if est is None else sum(getattr(line, attr) for line in est.lines if (line.type, line.name) not in skip)
        )

    left_out = list(
        dict.fromkeys(
            [
                *(f"head: {u}" for u in (head.unpriced if head else [])),
                *(f"base: {u}" for u in (base.unpriced if base else [])),
            ]
        )
    )
    return CostDelta(
        base,
        head,
        counted(head, "idle") - counted(base, "idle"),
        counted(head, "peak") - counted(base, "peak"),
        left_out,
    )


# ----------------------------------------------------------------------------------------------------------
# Reports


def money(value: float) -> str:
    """``$1,234.56``."""
    return f"${value:,.2f}"


def to_markdown(est: Estimate, table: PriceTable | None = None) -> str:
    """A Markdown section: totals, a line per resource, the assumptions and the price sources."""
    table = table or load_prices()
    lines = [
        f"### Monthly cost estimate: `{est.stack}` ({est.region})\n",
        f"**Idle (min nodes): {money(est.idle)} · Peak (max nodes): {money(est.peak)}**"
        f"{'' if est.complete else ' **(incomplete)**'} — list prices as of {est.as_of}.\n",
        *(
            [
                f"> [!WARNING]\n> **Not priced ({len(est.unpriced)}), left out of the totals:** "
                + "; ".join(est.unpriced)
                + "\n"
            ]
            if est.unpriced
            else []
        ),
        *(
            [
                f"**Usage-priced ({len(est.usage_priced)}), $0 a month in the totals plus their usage:** "
                + "; ".join(est.usage_priced)
                + "\n"
            ]
            if est.usage_priced
            else []
        ),
        "| resource | type | what | idle | peak |",
        "|---|---|---|---:|---:|",
    ]
    for line in sorted(est.lines, key=lambda x: -x.peak):
        lines.append(f"| `{line.name}` | {line.type} | {line.what} | {money(line.idle)} | {money(line.peak)} |")
    lines.append("")
    lines.append(
        "Assumptions: "
        + ", ".join(f"{k}={v:g}" for k, v in est.assumptions.items())
        + ". "
        + "Sources: "
        + ", ".join(f"[{k}]({v.url}) ({v.as_of})" for k, v in table.sources.items())
        + ".\n"
    )
    return "\n".join(lines) + "\n"


def to_text(est: Estimate) -> str:
    """Plain text for the terminal."""
    width = max([len(line.name) for line in est.lines] + [8])
    out = [f"{est.stack} ({est.environment}, {est.region}), list prices as of {est.as_of}:"]
    if est.unpriced:
        out.append(f"  INCOMPLETE: {len(est.unpriced)} resource(s) not priced, left out of the totals (listed below)")
    for line in sorted(est.lines, key=lambda x: -x.peak):
        out.append(f"  {line.name:<{width}}  {money(line.idle):>12} {money(line.peak):>12}  {line.what}")
    out.append(f"  {'TOTAL':<{width}}  {money(est.idle):>12} {money(est.peak):>12}  idle (min nodes) / peak (max)")
    out += [f"  not priced: {u}" for u in est.unpriced]
    out += [f"  usage-priced ($0 a month plus usage): {u}" for u in est.usage_priced]
    return "\n".join(out) + "\n"


def delta_markdown(base: Estimate, head: Estimate) -> str:
    """One Markdown line: how the monthly estimate moves from ``base`` to ``head``."""

    def signed(value: float) -> str:
        return ("+" if value >= 0 else "-") + money(abs(value))

    return (
        f"**Cost:** idle {money(base.idle)} → {money(head.idle)} ({signed(head.idle - base.idle)}), "
        f"peak {money(base.peak)} → {money(head.peak)} ({signed(head.peak - base.peak)}) per month.\n"
    )


def dumps(est: Estimate) -> str:
    """The estimate as indented JSON."""
    return json.dumps(est.to_json(), indent=2)
