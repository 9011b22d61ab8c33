"""`mlplat cost`: the price table, the per-resource lines, idle vs peak, and the shipped stacks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.infra.engine import Render
from mlplat.review.cost import (
    PriceTableError,
    RegionPrices,
    diff_costs,
    estimate,
    estimate_or_unpriced,
    load_prices,
    to_markdown,
    to_text,
)

runner = CliRunner()
PROVIDER = {
    "urn": "urn:p::aws",
    "type": "pulumi:providers:aws",
    "name": "aws",
    "inputs": {"region": "us-east-1"},
    "options": {},
}


def doc(*records: dict[str, Any], stack: str = "dev") -> dict[str, Any]:
    return {"project": "mlplat", "stack": stack, "resources": [PROVIDER, *records]}


def rec(type_: str, name: str, deps: tuple[str, ...] = (), **inputs: Any) -> dict[str, Any]:
    return {
        "urn": f"urn:{type_}::{name}",
        "type": type_,
        "name": name,
        "inputs": inputs,
        "options": {"depends_on": list(deps)},
    }


def test_price_table_is_dated_and_every_figure_cites_a_dated_aws_source() -> None:
    table = load_prices()
    assert re.fullmatch(r"\d{4}-\d{2}", table.as_of)
    assert table.sources and all(s.url.startswith("https://aws.amazon.com/") for s in table.sources.values())
    assert all(re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", s.as_of) for s in table.sources.values())
    assert table.as_of == min(s.as_of for s in table.sources.values())[:7]  # the headline's date: the oldest
    covered = [field for s in table.sources.values() for field in s.covers]
    assert sorted(covered) == sorted({*RegionPrices.model_fields, "spot"})  # each figure: one source
    assert {"dev", "staging", "production"} <= set(table.usage.environments)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t["sources"]["kms"].update(covers=["kms_key_month", "eks_cluster_hour"]), "covered twice"),
        (lambda t: t["sources"].pop("load_balancer"), "without a source ['alb_hour', 'alb_lcu_hour']"),
        (lambda t: t["sources"]["kms"].update(as_of="2024-06"), "must be the oldest"),
        (lambda t: t["sources"]["kms"].pop("as_of"), "sources.kms.as_of: Field required"),
    ],
)
def test_a_figure_without_a_dated_source_is_refused(edit: Callable[[dict[str, Any]], Any], problem: str) -> None:
    text = json.loads(load_prices().model_dump_json())
    edit(text)
    with pytest.raises(PriceTableError, match=re.escape(problem)):
        load_prices(json.dumps(text))


def test_node_group_idle_is_min_nodes_peak_is_max_nodes_spot_discounted() -> None:
    table = load_prices()
    lt = rec(
        "aws:ec2/launchTemplate:LaunchTemplate",
        "gpu-lt",
        blockDeviceMappings=[{"ebs": {"volumeSize": 100, "volumeType": "gp3"}}],
    )
    gpu = rec(
        "aws:eks/nodeGroup:NodeGroup",
        "gpu",
        deps=(lt["urn"],),
        instanceTypes=["g5.xlarge", "g6.xlarge"],
        capacityType="SPOT",
        scalingConfig={"minSize": 0, "maxSize": 4, "desiredSize": 0},
    )
    est = estimate(doc(lt, gpu), "dev", table)
    (line,) = est.lines
    per_node = 1.006 * 0.45 * 730 + 100 * 0.08
    assert line.idle == 0 and line.peak == pytest.approx(4 * per_node)
    assert line.what == "0-4 x g5.xlarge spot at 45% of on-demand, 100 GB gp3 each"


def test_on_demand_group_without_launch_template_uses_the_eks_default_disk() -> None:
    cpu = rec(
        "aws:eks/nodeGroup:NodeGroup", "cpu", instanceTypes=["m6i.large"], scalingConfig={"minSize": 2, "maxSize": 5}
    )
    (line,) = estimate(doc(cpu), "dev").lines
    per_node = 0.096 * 730 + 20 * 0.10
    assert (line.idle, line.peak) == (pytest.approx(2 * per_node), pytest.approx(5 * per_node))


def test_rds_multi_az_doubles_instance_and_storage() -> None:
    single = rec(
        "aws:rds/instance:Instance",
        "db",
        instanceClass="db.t4g.medium",
        allocatedStorage=20,
        storageType="gp3",
        multiAz=False,
    )
    multi = {**single, "inputs": {**single["inputs"], "multiAz": True}}
    one = estimate(doc(single), "dev").lines[0].peak
    assert one == pytest.approx(0.065 * 730 + 20 * 0.115)
    assert estimate(doc(multi), "dev").lines[0].peak == pytest.approx(2 * one)


def test_nat_data_assumption_is_split_over_the_gateways_and_endpoints_priced_per_az() -> None:
    nats = [rec("aws:ec2/natGateway:NatGateway", f"nat-{i}") for i in range(2)]
    endpoint = rec("aws:ec2/vpcEndpoint:VpcEndpoint", "ecr", vpcEndpointType="Interface", subnetIds=["a", "b", "c"])
    gateway = rec("aws:ec2/vpcEndpoint:VpcEndpoint", "s3", vpcEndpointType="Gateway")
    est = estimate(doc(*nats, endpoint, gateway, stack="production"), "production")
    by_name = {line.name: line.peak for line in est.lines}
    assert by_name["nat-0"] == pytest.approx(0.045 * 730 + 250 * 0.045)  # 500 GB over two gateways
    assert by_name["ecr"] == pytest.approx(3 * 0.01 * 730 + 300 * 0.01)
    assert "s3" not in by_name  # gateway endpoints are free


def test_unknown_prices_are_listed_not_counted_as_free() -> None:
    group = rec("aws:eks/nodeGroup:NodeGroup", "odd", instanceTypes=["x9.huge"], scalingConfig={"maxSize": 1})
    db = rec("aws:rds/instance:Instance", "db", instanceClass="db.x9.huge")
    est = estimate(doc(group, db), "dev")
    assert est.lines == []
    assert est.unpriced == [
        "odd: no EC2 price for 'x9.huge' in the table",
        "db: no RDS price for 'db.x9.huge' in the table",
    ]
    markdown = to_markdown(est)
    assert "**(incomplete)**" in markdown.splitlines()[2]  # in the headline, not a footnote
    assert "**Not priced (2), left out of the totals:** odd: no EC2 price" in markdown
    assert "INCOMPLETE: 2 resource(s) not priced" in to_text(est)


def test_unpriced_region_and_environment_are_clear_errors() -> None:
    other = {**PROVIDER, "inputs": {"region": "ap-south-2"}}
    with pytest.raises(PriceTableError, match=r"no prices for region 'ap-south-2'.*regions priced: us-east-1"):
        estimate({"stack": "x", "resources": [other]}, "dev")
    with pytest.raises(PriceTableError, match="no usage assumptions for environment 'qa'"):
        estimate(doc(), "qa")
    with pytest.raises(PriceTableError, match="no AWS provider with a region"):
        estimate({"stack": "x", "resources": []}, "dev")


def test_malformed_price_file_names_the_field() -> None:
    text = json.loads(load_prices().model_dump_json())
    text["regions"]["us-east-1"]["nat_gateway_hour"] = "cheap"
    with pytest.raises(PriceTableError, match=r"regions\.us-east-1\.nat_gateway_hour"):
        load_prices(json.dumps(text))


def test_shipped_stacks_production_costs_more_and_dev_gpu_pool_idles_at_zero(
    dev_stack: Render, production_stack: Render
) -> None:
    dev = estimate(dev_stack.to_json(), "dev")
    prod = estimate(production_stack.to_json(), "production")
    assert dev.unpriced == [] and prod.unpriced == []
    assert 0 < dev.idle < dev.peak and 0 < prod.idle < prod.peak
    assert prod.idle > dev.idle and prod.peak > dev.peak
    groups = [line for line in dev.lines if line.type in ("aws:eks/nodeGroup:NodeGroup", "eks:index:ManagedNodeGroup")]
    gpu = [line for line in groups if "spot" in line.what]
    assert gpu and all(line.idle == 0 and line.peak > 0 for line in gpu)
    assert any(line.type in ("eks:index:Cluster", "aws:eks/cluster:Cluster") for line in prod.lines)
    # Prometheus' volumes (README: dev 1 x 20 GiB, production 2 x 200 GiB) on the cluster's gp3 class
    for est, volumes in ((dev, "1 x 20 GB gp3"), (prod, "2 x 200 GB gp3")):
        (line,) = [line for line in est.lines if line.type == "kubernetes:helm.sh/v3:Release"]
        assert line.what.startswith(volumes) and line.idle == pytest.approx(
            float(volumes[0]) * float(volumes.split()[2]) * 0.08
        )


def test_cost_cli_text_json_markdown(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cost", "dev"])
    assert result.exit_code == 0, result.output
    assert "TOTAL" in result.output and "list prices as of" in result.output
    data = json.loads(runner.invoke(app, ["cost", "dev", "-f", "json"]).output)
    assert data["idle_monthly"] == pytest.approx(sum(line["idle"] for line in data["lines"]), abs=0.05)
    assert runner.invoke(app, ["cost", "dev", "-f", "markdown"]).output.startswith("### Monthly cost estimate")
    saved = tmp_path / "r.json"
    bucket = rec("aws:s3/bucket:Bucket", "data")
    saved.write_text(
        json.dumps({"stack": "x", "resources": [{**PROVIDER, "inputs": {"region": "ap-south-2"}}, bucket]})
    )
    result = runner.invoke(app, ["cost", "x", "--render", str(saved)])
    assert result.exit_code == 0 and "INCOMPLETE: 1 resource(s) not priced" in result.output
    assert "not priced: data: no prices for region 'ap-south-2'" in result.output
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"stack": "x", "resources": []}))
    result = runner.invoke(app, ["cost", "x", "--render", str(empty)])
    assert result.exit_code == 2 and "holds no resources" in result.output


def test_alb_ingresses_are_priced_once_per_load_balancer() -> None:
    def ingress(name: str, group: str | None = None, cls: str = "alb") -> dict[str, Any]:
        annotations = {"alb.ingress.kubernetes.io/group.name": group} if group else {}
        return rec(
            "kubernetes:networking.k8s.io/v1:Ingress",
            name,
            metadata={"annotations": annotations},
            spec={"ingressClassName": cls},
        )

    records = [ingress("a"), ingress("b", "shared"), ingress("c", "shared"), ingress("d", cls="nginx")]
    est = estimate(doc(*records), "dev")
    alb = 0.0225 * 730 + 1 * 0.008 * 730  # dev assumes one LCU
    assert {line.name: line.peak for line in est.lines} == {"a": pytest.approx(alb), "b": pytest.approx(alb)}
    assert [line.what for line in est.lines if line.name == "b"] == [
        "ALB (AWS Load Balancer Controller, group shared) + 1 LCU"
    ]


def test_a_control_plane_in_extended_support_is_priced_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from mlplat.components import k8s_versions
    from mlplat.review import cost

    monkeypatch.setattr(
        cost, "support_status", lambda v, on=None: k8s_versions.support_status(v, on=dt.date(2026, 11, 29))
    )
    old, new = (estimate(doc(rec("eks:index:Cluster", "eks", version=v)), "dev").lines[0] for v in ("1.32", "1.35"))
    assert old.what.startswith("EKS control plane (Kubernetes 1.32: extended support)")
    assert old.idle == pytest.approx(0.6 * 730) and new.idle == pytest.approx(0.1 * 730)


def test_every_node_type_the_config_accepts_is_priced_in_every_priced_region() -> None:
    # the capacity table is what the config accepts for node pools (any other type is a config error)
    from mlplat.components.capacity import INSTANCE_TYPES
    from mlplat.infra.config import NODE_INSTANCE_TYPES

    table = load_prices()
    assert set(NODE_INSTANCE_TYPES) == set(INSTANCE_TYPES)
    for region, prices in table.regions.items():
        missing = set(NODE_INSTANCE_TYPES) - set(prices.ec2_hour)
        assert not missing, f"{region}: node types the config accepts without an EC2 price: {sorted(missing)}"
    assert not table.not_priced.ec2


def test_every_rds_class_the_config_accepts_is_priced_in_every_priced_region() -> None:
    from mlplat.infra.config_workloads import RDS_INSTANCE_CLASSES

    table = load_prices()
    assert "db.t4g.medium" in RDS_INSTANCE_CLASSES  # the component's default
    for region, prices in table.regions.items():
        missing = set(RDS_INSTANCE_CLASSES) - set(prices.rds_hour)
        assert not missing, f"{region}: RDS classes the config accepts without a price: {sorted(missing)}"


def test_every_volume_type_the_config_makes_is_priced_in_every_priced_region() -> None:
    # node root volumes (the launch template), RDS storage and the cluster's default StorageClass are gp3; the config
    # has no key that changes them
    from mlplat.components.cluster import STORAGE_CLASS

    assert STORAGE_CLASS == "gp3"
    for region, prices in load_prices().regions.items():
        assert "gp3" in prices.ebs_gb_month and "gp3" in prices.rds_storage_gb_month, region


def config_accepts_region(region: str) -> bool:
    from mlplat.infra.config import ConfigError, load

    try:
        load({"aws:region": region, "mlplat:environment": "dev"})
    except ConfigError:
        return False
    return True


def test_the_config_accepts_exactly_the_regions_the_table_prices() -> None:
    # every region botocore knows, in every partition: the config accepts only those the table prices in full
    import botocore.session

    from mlplat.infra.config import REGIONS

    session = botocore.session.get_session()
    regions = {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}
    accepted = {r for r in regions | set(REGIONS) if config_accepts_region(r)}
    table = load_prices()
    assert accepted == set(REGIONS) == set(table.regions)
    assert {"eu-west-1", "us-gov-west-1", "cn-north-1"}.isdisjoint(accepted)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"aws:region": "eu-west-1"},
            "aws:region: 'eu-west-1' is not a region mlplat's price table prices (review/prices.json), so `mlplat "
            "cost` "
            "could not price the stack; allowed: us-east-1",
        ),
        ({"aws:region": "US-EAST-1 "}, "aws:region: 'US-EAST-1 ' is not a region"),
        (
            {"mlplat:tracking": json.dumps({"database": {"instanceClass": "db.r6g.xlarge"}})},
            "mlplat:tracking.database.instanceClass: 'db.r6g.xlarge' is not an RDS class mlplat's price table prices "
            "(review/prices.json), so `mlplat cost` could not price the database; allowed: db.t3.micro, ",
        ),
        (
            {"mlplat:cluster": json.dumps({"nodeGroups": {"cpu": {"instanceTypes": ["m6i.large", "c7i.xlarge"]}}})},
            "mlplat:cluster.nodeGroups.cpu.instanceTypes: ['c7i.xlarge'] is not in mlplat's capacity and price tables, "
            "so neither the fit of pods nor the cost could be checked; allowed: m5.large, ",
        ),
    ],
)
def test_a_value_the_table_does_not_price_is_a_config_error_naming_the_key_and_the_value(
    values: dict[str, str], problem: str
) -> None:
    from mlplat.infra.config import ConfigError, load

    with pytest.raises(ConfigError) as caught:
        load({"aws:region": "us-east-1", "mlplat:environment": "dev", **values})
    assert any(line.strip().startswith(problem) for line in str(caught.value).splitlines()), str(caught.value)


def test_a_render_in_a_region_the_table_lacks_names_every_priced_resource_in_both_headlines() -> None:
    # a render not made from mlplat's config (a team's own program, a git ref rendered with its own older code)
    table = load_prices()
    records = (
        rec("aws:rds/instance:Instance", "db", instanceClass="db.r6g.large", allocatedStorage=20, storageType="gp3"),
        rec(
            "aws:eks/nodeGroup:NodeGroup",
            "cpu",
            instanceTypes=["m6i.large"],
            scalingConfig={"minSize": 1, "maxSize": 2},
        ),
    )
    for region in ("us-east-1", "eu-west-1", "us-gov-west-1", "cn-north-1"):
        document = {"stack": "dev", "resources": [{**PROVIDER, "inputs": {"region": region}}, *records]}
        est = estimate_or_unpriced(document)
        assert est is not None
        if region in table.regions:
            assert est.complete and len(est.lines) == 2, region
            continue
        assert est.lines == [] and len(est.unpriced) == 2, region
        assert all(f"no prices for region {region!r}" in why for why in est.unpriced)
        assert "INCOMPLETE: 2 resource(s) not priced" in to_text(est).splitlines()[1]
        assert "**(incomplete)**" in to_markdown(est).splitlines()[2]
        delta = diff_costs(est, est)
        assert delta is not None and delta.markdown().startswith("**Cost (incomplete):**")


def test_the_instance_classes_the_shipped_config_uses_are_priced() -> None:
    from mlplat.infra.config import load

    table = load_prices().regions["us-east-1"]
    for environment in ("dev", "staging", "production"):
        cfg = load({"aws:region": "us-east-1", "mlplat:environment": environment})
        assert cfg.tracking.database.instance_class in table.rds_hour, environment
        for pool in cfg.cluster.node_pools.values():
            assert set(pool.instance_types) <= set(table.ec2_hour), (environment, pool.name)


def render_file(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"project": "mlplat", "stack": "dev", "resources": [PROVIDER, *records]}))
    return path


def test_an_unpriced_class_marks_cost_and_diff_incomplete_in_their_headlines(tmp_path: Path) -> None:
    def database(cls: str) -> dict[str, Any]:
        return rec("aws:rds/instance:Instance", "db", instanceClass=cls, allocatedStorage=20, storageType="gp3")

    base = render_file(tmp_path / "base.json", database("db.r6g.large"))
    # a class the config refuses, in a render made elsewhere (a team's own program, a ref's own older code)
    head = render_file(tmp_path / "head.json", database("db.x2g.16xlarge"))
    text = runner.invoke(app, ["cost", "dev", "--render", str(head)])
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[1] == (
        "  INCOMPLETE: 1 resource(s) not priced, left out of the totals (listed below)"
    )
    markdown = runner.invoke(app, ["cost", "dev", "--render", str(head), "-f", "markdown"]).output
    assert "**(incomplete)**" in markdown.splitlines()[2] and "no RDS price for 'db.x2g.16xlarge'" in markdown
    assert (
        json.loads(runner.invoke(app, ["cost", "dev", "--render", str(head), "-f", "json"]).output)["complete"] is False
    )
    diff = runner.invoke(app, ["diff", str(base), str(head)])
    assert diff.exit_code == 0, diff.output
    headline = next(line for line in diff.output.splitlines() if line.startswith("**Cost"))
    base_cost = 0.225 * 730 + 20 * 0.115  # db.r6g.large and 20 GB gp3, both in the table
    assert headline.startswith(f"**Cost (incomplete):** idle ${base_cost:,.2f} → $0.00* (+$0.00)")
    assert "head: db: no RDS price for 'db.x2g.16xlarge' in the table" in diff.output
    (stack,) = json.loads(runner.invoke(app, ["diff", str(base), str(head), "-f", "json"]).stdout)["stacks"]
    assert stack["cost"]["complete"] is False and stack["cost"]["idle_delta"] == 0


def test_the_readme_states_what_the_table_prices() -> None:
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    table = load_prices()
    assert f"EC2 from AWS's Price List API as of {table.sources['ec2'].as_of}" in readme
    assert "prices us-east-1:" in readme and set(table.regions) == {"us-east-1"}


def test_an_upsized_database_outside_the_table_is_never_a_saving() -> None:
    from mlplat.review.cost import diff_costs

    before = estimate(doc(rec("aws:rds/instance:Instance", "db", instanceClass="db.r6g.large")), "production")
    after = estimate(doc(rec("aws:rds/instance:Instance", "db", instanceClass="db.r6g.xlarge")), "production")
    delta = diff_costs(before, after)
    assert delta is not None and not delta.complete
    assert delta.idle_delta == 0  # left out of both sides, not a -$164 "saving"
    assert delta.markdown().startswith("**Cost (incomplete):** idle $164.25 → $0.00* (+$0.00)")
    assert "head: db: no RDS price for 'db.r6g.xlarge'" in delta.markdown()


def prometheus(storage_class: str | None = "gp3", size: str = "200Gi", replicas: int = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    values = {
        "prometheus": {"prometheusSpec": {"replicas": replicas, "storageSpec": {"volumeClaimTemplate": {"spec": spec}}}}
    }
    return rec("kubernetes:helm.sh/v3:Release", "monitoring", values=values)


# the gp3 class mlplat's Cluster declares through pulumi-eks (components/cluster.py), default for unnamed claims
CLUSTER = rec(
    "eks:index:Cluster",
    "eks",
    version="1.35",
    storageClasses={"gp3": {"type": "gp3", "default": True, "metadata": {"name": "gp3"}}},
)


def test_prometheus_volumes_in_helm_values_are_priced_at_their_storage_class_type() -> None:
    est = estimate(doc(CLUSTER, prometheus()), "production")
    (line,) = [line for line in est.lines if line.name == "monitoring"]
    assert line.what.startswith("2 x 200 GB gp3") and line.idle == pytest.approx(400 * 0.08)
    unnamed = estimate(doc(CLUSTER, prometheus(storage_class=None)), "production")  # the default class
    assert [line.idle for line in unnamed.lines if line.name == "monitoring"] == [pytest.approx(400 * 0.08)]
    old_class = rec(
        "kubernetes:storage.k8s.io/v1:StorageClass",
        "gp2",
        metadata={"name": "gp2"},
        provisioner="ebs.csi.aws.com",
        parameters={"type": "gp2"},
    )
    gp2 = estimate(doc(CLUSTER, old_class, prometheus(storage_class="gp2")), "production")
    assert [line.idle for line in gp2.lines if line.name == "monitoring"] == [pytest.approx(400 * 0.10)]


@pytest.mark.parametrize(
    ("records", "why"),
    [
        ((prometheus(storage_class="fast"),), "monitoring: StorageClass 'fast' is not defined in the render"),
        ((prometheus(storage_class=None),), "monitoring: the default StorageClass is not defined in the render"),
        (
            (
                rec(
                    "kubernetes:storage.k8s.io/v1:StorageClass",
                    "io",
                    metadata={"name": "io"},
                    parameters={"type": "io2"},
                ),
                prometheus(storage_class="io"),
            ),
            "monitoring: no EBS price for volume type 'io2' in the table",
        ),
        (
            (
                rec(
                    "kubernetes:core/v1:PersistentVolumeClaim",
                    "data",
                    spec={"storageClassName": "fast", "resources": {"requests": {"storage": "10Gi"}}},
                ),
            ),
            "data: StorageClass 'fast' is not defined in the render",
        ),
        (
            (rec("aws:ebs/volume:Volume", "scratch", size=100, type="io2"),),
            "scratch: no EBS price for volume type 'io2' in the table",
        ),
        (
            (
                rec(
                    "aws:rds/instance:Instance",
                    "db",
                    instanceClass="db.t4g.medium",
                    storageType="io2",
                    allocatedStorage=100,
                ),
            ),
            "db: no RDS storage price for 'io2' in the table",
        ),
        (
            (
                rec(
                    "aws:ec2/launchTemplate:LaunchTemplate",
                    "lt",
                    blockDeviceMappings=[{"ebs": {"volumeSize": 100, "volumeType": "io2"}}],
                ),
                rec(
                    "aws:eks/nodeGroup:NodeGroup",
                    "cpu",
                    deps=("urn:aws:ec2/launchTemplate:LaunchTemplate::lt",),
                    instanceTypes=["m6i.large"],
                    scalingConfig={"minSize": 1, "maxSize": 2},
                ),
            ),
            "cpu: no EBS price for volume type 'io2' in the table",
        ),
    ],
)
def test_a_volume_of_an_unknown_type_or_class_is_named_unpriced_never_priced_as_gp3(
    records: tuple[dict[str, Any], ...], why: str
) -> None:
    est = estimate(doc(*records), "production")
    assert est.unpriced == [why + ("" if why.endswith("table") else ", so its EBS volume type is unknown")]
    assert not est.complete and est.lines == []
    assert "**(incomplete)**" in to_markdown(est).splitlines()[2]


def test_an_unpriced_region_names_every_priced_resource_instead_of_dropping_the_cost() -> None:
    from mlplat.review.cost import diff_costs, estimate_or_unpriced

    other = {**PROVIDER, "inputs": {"region": "ap-south-2"}}
    document = {
        "stack": "x",
        "resources": [other, rec("aws:rds/instance:Instance", "db", instanceClass="db.r6g.large")],
    }
    est = estimate_or_unpriced(document)
    assert est is not None and est.lines == [] and est.unpriced_keys == [("aws:rds/instance:Instance", "db")]
    assert "no prices for region 'ap-south-2'" in est.unpriced[0]
    delta = diff_costs(est, est)
    assert delta is not None and "(incomplete)" in delta.markdown()


def test_cost_of_a_stack_in_an_unpriced_region_names_every_priced_resource(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "team-stack"  # eu-west-1: not in the table
    result = runner.invoke(app, ["cost", "dev", "-C", str(example)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"dev (dev, eu-west-1), list prices as of {load_prices().as_of}:"
    assert lines[1] == "  INCOMPLETE: 2 resource(s) not priced, left out of the totals (listed below)"
    assert (
        sum("not priced: fraud-artifacts" in line and "no prices for region 'eu-west-1'" in line for line in lines) == 2
    )


def test_an_unpriced_region_also_names_load_balancer_ingresses_and_chart_volumes() -> None:
    ingress = rec("kubernetes:networking.k8s.io/v1:Ingress", "web", metadata={}, spec={"ingressClassName": "alb"})
    plain = rec("kubernetes:helm.sh/v3:Release", "autoscaler", values={"replicas": 2})  # no volumes: costs nothing
    document = {
        "stack": "dev",
        "resources": [{**PROVIDER, "inputs": {"region": "eu-west-1"}}, CLUSTER, ingress, prometheus(), plain],
    }
    est = estimate_or_unpriced(document)
    assert est is not None
    assert [name for _, name in est.unpriced_keys] == ["eks", "monitoring", "web"]
    priced = estimate(doc(CLUSTER, ingress, prometheus(), plain), "dev")
    assert sorted(line.name for line in priced.lines) == ["eks", "monitoring", "web"]  # the same three, priced


def test_an_rds_upsize_to_a_class_the_config_accepts_is_a_real_increase_in_cost_and_diff(tmp_path: Path) -> None:
    def database(cls: str) -> dict[str, Any]:
        return rec(
            "aws:rds/instance:Instance", "db", instanceClass=cls, allocatedStorage=20, storageType="gp3", multiAz=True
        )

    base = render_file(tmp_path / "base.json", database("db.t4g.medium"))
    head = render_file(tmp_path / "head.json", database("db.r6g.large"))
    priced = json.loads(runner.invoke(app, ["cost", "dev", "--render", str(head), "-f", "json"]).output)
    assert priced["complete"] is True and priced["idle_monthly"] == pytest.approx(
        2 * (0.225 * 730 + 20 * 0.115), abs=0.01
    )
    diff = runner.invoke(app, ["diff", str(base), str(head)])
    assert diff.exit_code == 0, diff.output
    headline = next(line for line in diff.output.splitlines() if line.startswith("**Cost"))
    before, after = (2 * (hourly * 730 + 20 * 0.115) for hourly in (0.065, 0.225))  # primary and standby
    increase = after - before
    assert headline.startswith(f"**Cost:** idle ${before:,.2f} → ${after:,.2f} (+${increase:,.2f}), ")
    (stack,) = json.loads(runner.invoke(app, ["diff", str(base), str(head), "-f", "json"]).stdout)["stacks"]
    assert stack["cost"]["complete"] is True and stack["cost"]["idle_delta"] == pytest.approx(increase, abs=0.01)


def test_cloudwatch_alarms_are_priced_per_metric_and_resolution() -> None:
    alarm = "aws:cloudwatch/metricAlarm:MetricAlarm"
    standard = rec(alarm, "cpu", period=300, comparisonOperator="GreaterThanThreshold")
    high = rec(alarm, "fast", period=10, comparisonOperator="GreaterThanThreshold")
    expression = rec(
        alarm,
        "ratio",
        comparisonOperator="GreaterThanThreshold",
        metricQueries=[
            {"id": "e", "expression": "a / b", "returnData": True},
            {"id": "a", "metric": {"metricName": "A", "period": 120}},
            {"id": "b", "metric": {"metricName": "B", "period": 120}},
        ],
    )
    band = rec(alarm, "band", period=300, comparisonOperator="LessThanLowerOrGreaterThanUpperThreshold")
    est = estimate(doc(standard, high, expression, band), "dev")
    assert est.complete
    # Infracost's golden test (the table's source): standard $0.10, high resolution $0.30, expression of two
    # metrics $0.20, an anomaly detection band three metrics
    assert {line.name: line.idle for line in est.lines} == {
        "cpu": pytest.approx(0.10),
        "fast": pytest.approx(0.30),
        "ratio": pytest.approx(0.20),
        "band": pytest.approx(0.30),
    }
    assert {line.name: line.what for line in est.lines}["ratio"] == "CloudWatch alarm, 2 metric(s), standard resolution"


def test_sns_topics_and_sqs_queues_are_named_usage_priced_never_a_silent_zero(tmp_path: Path) -> None:
    topic, queue = rec("aws:sns/topic:Topic", "alarms"), rec("aws:sqs/queue:Queue", "interruptions")
    est = estimate(doc(topic, queue), "dev")
    assert est.lines == [] and est.complete
    assert est.usage_priced == [
        "alarms: SNS topic, no monthly charge; $0.50 per million publishes (plus deliveries), by usage",
        "interruptions: SQS queue, no monthly charge; $0.40 per million requests, by usage",
    ]
    assert "usage-priced ($0 a month plus usage): alarms: SNS topic" in to_text(est)
    assert "**Usage-priced (2), $0 a month in the totals plus their usage:** alarms: SNS topic" in to_markdown(est)
    assert est.to_json()["usage_priced"] == est.usage_priced
    delta = diff_costs(estimate(doc(), "dev"), est)
    assert delta is not None and delta.complete
    assert "- added: interruptions: SQS queue, no monthly charge" in delta.markdown()
    # in a region the table lacks, they are named unpriced like every other priced type
    elsewhere = estimate_or_unpriced(
        {"stack": "x", "resources": [{**PROVIDER, "inputs": {"region": "eu-west-1"}}, topic, queue]}
    )
    assert elsewhere is not None and [name for _, name in elsewhere.unpriced_keys] == ["alarms", "interruptions"]


def test_shipped_stacks_price_every_alarm_and_name_their_topic_and_queue(production_stack: Render) -> None:
    est = estimate(production_stack.to_json(), "production")
    assert est.complete
    alarms = [
        r for r in production_stack.to_json()["resources"] if r["type"] == "aws:cloudwatch/metricAlarm:MetricAlarm"
    ]
    priced = [line for line in est.lines if line.type == "aws:cloudwatch/metricAlarm:MetricAlarm"]
    assert alarms and len(priced) == len(alarms) and all(line.idle > 0 for line in priced)
    kinds = {u.split(": ", 2)[1] for u in est.usage_priced}
    assert kinds == {
        "SNS topic, no monthly charge; $0.50 per million publishes (plus deliveries), by usage",
        "SQS queue, no monthly charge; $0.40 per million requests, by usage",
    }
