"""`mlplat diff`: property-level changes, replacements, protected resources, Markdown/JSON, and git refs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.infra.engine import Render
from mlplat.review.diff import diff_renders, forces_replacement, render_ref, to_markdown

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def platform(
    cidr: str = "10.0.0.0/16",
    instance_type: str = "m6i.xlarge",
    owner: str = "a",
    extra_bucket: bool = False,
    protect_bucket: bool = True,
) -> Callable[[], None]:
    """A small program: a VPC, a subnet, a node group, a protected bucket (and optionally another)."""

    def program() -> None:
        provider = aws.Provider(
            "aws",
            region="us-east-1",
            default_tags=aws.ProviderDefaultTagsArgs(
                tags={"project": "mlplat", "environment": "dev", "owner": owner, "cost-center": "ml"}
            ),
        )
        opts = pulumi.ResourceOptions(provider=provider)
        vpc = aws.ec2.Vpc("vpc", cidr_block=cidr, tags={"Name": "vpc"}, opts=opts)
        subnet = aws.ec2.Subnet(
            "private-0",
            vpc_id=vpc.id,
            cidr_block=cidr.replace("0.0/16", "0.0/19"),
            availability_zone="us-east-1a",
            opts=opts,
        )
        aws.eks.NodeGroup(
            "cpu",
            cluster_name="c",
            node_role_arn="arn:aws:iam::1:role/n",
            subnet_ids=[subnet.id],
            instance_types=[instance_type],
            capacity_type="ON_DEMAND",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=1, max_size=3, desired_size=1),
            opts=opts,
        )
        aws.s3.Bucket("data", opts=pulumi.ResourceOptions(provider=provider, protect=protect_bucket))
        if extra_bucket:
            aws.s3.Bucket("scratch", opts=opts)

    return program


@pytest.fixture
def rendered(render_program: Callable[..., Render]) -> Callable[..., dict[str, Any]]:
    def _rendered(**kwargs: Any) -> dict[str, Any]:
        return render_program(platform(**kwargs), config={"aws:region": "us-east-1"}, stack="dev").to_json()

    return _rendered


def test_identical_renders_have_no_changes(rendered: Callable[..., dict[str, Any]]) -> None:
    base = rendered()
    change = diff_renders(base, rendered())
    assert change.empty and change.unchanged == len(base["resources"]) - 1  # the Stack itself is skipped
    assert "No changes" in to_markdown(change)


def test_changed_instance_type_forces_node_group_replacement(rendered: Callable[..., dict[str, Any]]) -> None:
    change = diff_renders(rendered(), rendered(instance_type="g5.xlarge"))
    assert [c.name for c in change.changed] == ["cpu"]
    (prop,) = change.changed[0].changes
    assert (prop.path, prop.before, prop.after, prop.replaces) == ("instanceTypes", ["m6i.xlarge"], ["g5.xlarge"], True)
    assert [c.name for c in change.replaced] == ["cpu"]
    markdown = to_markdown(change)
    assert '| `cpu` | `aws:eks/NodeGroup` | `instanceTypes` **(forces replacement)** | `["m6i.xlarge"]` ' in markdown
    assert "1 to change (1 replaced)" in markdown


def test_vpc_cidr_change_replaces_vpc_and_subnet(rendered: Callable[..., dict[str, Any]]) -> None:
    change = diff_renders(rendered(), rendered(cidr="10.1.0.0/16"))
    replaced = {c.name: [p.path for p in c.changes if p.replaces] for c in change.replaced}
    assert replaced["vpc"] == ["cidrBlock"]
    assert "cidrBlock" in replaced["private-0"]


def test_tag_change_is_an_in_place_update(rendered: Callable[..., dict[str, Any]]) -> None:
    change = diff_renders(rendered(), rendered(owner="b"))
    assert [c.name for c in change.changed] == ["aws"]  # default tags live on the provider
    paths = [(p.path, p.before, p.after, p.replaces) for p in change.changed[0].changes]
    assert paths == [("defaultTags.tags.owner", "a", "b", False)]
    assert change.replaced == []


def test_added_resource_and_removed_protected_resource(rendered: Callable[..., dict[str, Any]]) -> None:
    grown = diff_renders(rendered(), rendered(extra_bucket=True))
    assert [(r.name, r.type) for r in grown.added] == [("scratch", "aws:s3/bucket:Bucket")]
    assert "| + add | `scratch` | `aws:s3/Bucket` |" in to_markdown(grown)
    shrunk = diff_renders(rendered(extra_bucket=True), rendered())
    assert [r.name for r in shrunk.removed] == ["scratch"] and shrunk.blocked == []
    base = rendered()
    head = {**base, "resources": [r for r in base["resources"] if r["name"] != "data"]}
    dropped = diff_renders(base, head)
    assert dropped.blocked == ["data"]
    markdown = to_markdown(dropped)
    assert "**`pulumi up` would refuse this change**" in markdown
    assert "delete `data` (`aws:s3/Bucket`): protected (`protect`)" in markdown
    # a stateful deletion sits at the top, never folded
    assert "| **delete** | `data` (protected) | `aws:s3/Bucket` | bucket and its objects |" in markdown


def test_unprotecting_is_reported_as_an_option_change(rendered: Callable[..., dict[str, Any]]) -> None:
    change = diff_renders(rendered(), rendered(protect_bucket=False))
    (prop,) = change.changed[0].changes
    assert (change.changed[0].name, prop.path, prop.before, prop.after) == ("data", "options.protect", True, False)


@pytest.mark.parametrize(
    ("type_", "path", "replaces"),
    [
        ("aws:ec2/subnet:Subnet", "availabilityZone", True),
        ("aws:ec2/subnet:Subnet", "tags.Name", False),
        ("aws:rds/instance:Instance", "engine", True),
        ("aws:rds/instance:Instance", "identifier", True),
        ("aws:rds/instance:Instance", "instanceClass", False),
        # regenerated from aws_eks_cluster: subnets are updated in place (UpdateClusterConfig), a new role replaces
        ("aws:eks/cluster:Cluster", "vpcConfig.subnetIds[1]", False),
        ("aws:eks/cluster:Cluster", "roleArn", True),
        ("aws:eks/cluster:Cluster", "vpcConfig.endpointPublicAccess", False),
        # regenerated from aws_eks_node_group: a new launch template replaces the group, a new version updates it
        ("aws:eks/nodeGroup:NodeGroup", "launchTemplate.id", True),
        ("aws:eks/nodeGroup:NodeGroup", "launchTemplate.version", False),
        ("eks:index:Cluster", "privateSubnetIds", True),
        ("kubernetes:apps/v1:Deployment", "metadata.name", True),
        ("kubernetes:apps/v1:Deployment", "spec.replicas", False),
        # the provider sets neither enableConfigMapMutable nor enableSecretMutable: new contents replace the object
        ("kubernetes:core/v1:Secret", "stringData.password", True),
        ("kubernetes:core/v1:ConfigMap", "data", True),
        ("kubernetes:core/v1:ConfigMap", "metadata.labels", False),
        ("pulumi:providers:aws", "region", True),
        ("aws:ec2/vpc:Vpc", "cidrBlockSuffix", False),  # a prefix match must stop at a path boundary
    ],
)
def test_replace_on_change_table(type_: str, path: str, replaces: bool) -> None:
    assert forces_replacement(type_, path) is replaces


def test_long_tables_fold_into_details(rendered: Callable[..., dict[str, Any]]) -> None:
    base = rendered()
    head = json.loads(json.dumps(base))
    for i in range(25):
        head["resources"].append(
            {"urn": f"urn:x::b{i}", "type": "aws:s3/bucket:Bucket", "name": f"b{i}", "inputs": {}, "options": {}}
        )
    markdown = to_markdown(diff_renders(base, head))
    assert "<details><summary>25 added</summary>" in markdown


def test_cli_diffs_two_json_renders_with_cost_delta(tmp_path: Path, rendered: Callable[..., dict[str, Any]]) -> None:
    (tmp_path / "base.json").write_text(json.dumps(rendered()))
    (tmp_path / "head.json").write_text(json.dumps(rendered(instance_type="m6i.2xlarge")))
    result = runner.invoke(app, ["diff", str(tmp_path / "base.json"), str(tmp_path / "head.json")])
    assert result.exit_code == 0, result.output
    assert "### Infrastructure diff: `dev`" in result.output
    assert "`instanceTypes` **(forces replacement)**" in result.output
    assert "**Cost:**" in result.output
    result = runner.invoke(app, ["diff", str(tmp_path / "base.json"), str(tmp_path / "head.json"), "-f", "json"])
    (stack,) = json.loads(result.stdout)["stacks"]
    assert stack["summary"] == {"added": 0, "removed": 0, "changed": 1, "replaced": 1, "unchanged": 4, "cascaded": 0}
    # one to three m6i nodes: doubling the instance size adds 0.192 $/h x 730 h per node
    assert stack["cost"]["idle_delta"] == pytest.approx(0.192 * 730, abs=0.01)
    assert stack["cost"]["peak_delta"] == pytest.approx(3 * 0.192 * 730, abs=0.01)


def test_cli_rejects_what_is_neither_a_file_nor_a_ref(tmp_path: Path) -> None:
    result = runner.invoke(app, ["diff", "no-such-ref-or-file", "--stack", "dev"])
    assert result.exit_code == 2 and "neither a render file nor a usable git ref" in result.output


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
        },
    )


@pytest.fixture
def project_repo(tmp_path: Path) -> Path:
    """A git repository holding this project's program and stacks, one commit."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("infra", "components", "serving", "training"):
        shutil.copytree(REPO / folder, repo / folder, ignore=ignore)
    for file in ["pyproject.toml", "Pulumi.yaml", *(p.name for p in REPO.glob("Pulumi.*.yaml"))]:
        shutil.copy(REPO / file, repo / file)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    return repo


def test_diff_against_a_git_ref_renders_the_refs_stack(project_repo: Path) -> None:
    stack_file = project_repo / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("cidr: 10.10.0.0/16", "cidr: 10.11.0.0/16"))
    base = render_ref(project_repo, "main", "dev")
    assert base["stack"] == "dev"
    vpc = next(r for r in base["resources"] if r["type"] == "aws:ec2/vpc:Vpc")
    assert vpc["inputs"]["cidrBlock"] == "10.10.0.0/16"  # the committed stack file, not the edited one
    result = runner.invoke(app, ["diff", "main", "--stack", "dev", "-C", str(project_repo), "-f", "json"])
    assert result.exit_code == 0, result.output
    (stack,) = json.loads(result.stdout)["stacks"]
    vpc_change = next(c for c in stack["changed"] if c["type"] == "aws:ec2/vpc:Vpc")
    assert vpc_change["replace"] is True
    assert {"path": "cidrBlock", "before": "10.10.0.0/16", "after": "10.11.0.0/16", "replaces": True} in (
        vpc_change["changes"]
    )
    result = runner.invoke(app, ["diff", "no-such-branch", "--stack", "dev", "-C", str(project_repo)])
    assert result.exit_code == 2 and "no-such-branch" in result.output


def test_a_stack_the_change_adds_shows_every_resource_added(project_repo: Path) -> None:
    dev = (project_repo / "Pulumi.dev.yaml").read_text()
    (project_repo / "Pulumi.staging.yaml").write_text(
        dev.replace("mlplat:environment: dev", "mlplat:environment: staging")
    )
    result = runner.invoke(app, ["diff", "main", "--stack", "staging", "-C", str(project_repo), "-f", "json"])
    assert result.exit_code == 0, result.output
    (stack,) = json.loads(result.stdout)["stacks"]
    assert stack["summary"]["added"] > 50 and stack["summary"]["removed"] == stack["summary"]["changed"] == 0
    # the whole estimate is the delta: the stack costs nothing before the change
    assert stack["cost"]["idle_delta"] == stack["cost"]["head"]["idle_monthly"] > 0
    assert stack["cost"]["base"] is None


def test_moving_to_another_provider_is_a_replacement(rendered: Callable[..., dict[str, Any]]) -> None:
    base = rendered()
    head = json.loads(json.dumps(base))
    vpc = next(r for r in head["resources"] if r["name"] == "vpc")
    vpc["options"]["provider"] = "urn:pulumi:dev::mlplat::pulumi:providers:aws::aws-west"
    change = next(c for c in diff_renders(base, head).changed if c.name == "vpc")
    assert change.replaces
    assert [p.path for p in change.changes] == ["options.provider"]


def test_the_head_side_renders_with_the_working_trees_code(project_repo: Path) -> None:
    # A code change (no stack-file change) that unprotects the production database: the working tree's code
    # must render the head side, not the installed mlplat (which would print "No changes").
    tracking = project_repo / "components" / "tracking.py"
    text = tracking.read_text()
    assert "protect=db.protect, retain_on_delete=db.protect" in text
    tracking.write_text(
        text.replace(
            "opts=pulumi.ResourceOptions(parent=self, protect=db.protect, retain_on_delete=db.protect)",
            "opts=pulumi.ResourceOptions(parent=self, protect=False)",
        )
    )
    result = runner.invoke(app, ["diff", "main", "-s", "production", "-C", str(project_repo), "-f", "json"])
    (stack,) = json.loads(result.stdout)["stacks"]
    db = next(c for c in stack["changed"] if c["type"] == "aws:rds/instance:Instance")
    assert {"path": "options.protect", "before": True, "after": False, "replaces": False} in db["changes"]
    assert "rendered with its own code" in stack["code"]["head"] and str(project_repo) in stack["code"]["head"]
    assert "that commit's own code" in stack["code"]["base"]
    assert "rendering production from the working tree" in result.stderr


def test_cli_habits_unknown_stack_boolean_head_version_and_exit_code(
    tmp_path: Path, rendered: Callable[..., dict[str, Any]]
) -> None:
    result = runner.invoke(app, ["diff", "HEAD", "-s", "prodution", "-C", str(REPO)])
    assert result.exit_code == 2 and "unknown stack 'prodution'" in result.output
    result = runner.invoke(app, ["diff", "HEAD", "--check", "true", "-C", str(REPO)])
    assert result.exit_code == 2 and "--check is a flag and takes no value" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("mlplat ")
    base = rendered()
    head = {**base, "resources": [r for r in base["resources"] if r["name"] != "data"]}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "head.json").write_text(json.dumps(head))
    result = runner.invoke(app, ["diff", str(tmp_path / "base.json"), str(tmp_path / "head.json")])
    assert result.exit_code == 3 and "`pulumi up` would refuse this change" in result.stdout


def test_ignore_changes_hides_a_property_and_its_cascade(rendered: Callable[..., dict[str, Any]]) -> None:
    base = rendered()
    head = json.loads(json.dumps(base))
    group = next(r for r in head["resources"] if r["name"] == "cpu")
    group["inputs"]["scalingConfig"]["desiredSize"] = 3
    group["options"]["ignore_changes"] = ["scalingConfig.desiredSize"]
    base_group = next(r for r in base["resources"] if r["name"] == "cpu")
    base_group["options"]["ignore_changes"] = ["scalingConfig.desiredSize"]
    change = diff_renders(base, head)
    assert change.empty


def test_a_replaced_subnet_replaces_the_node_group_that_uses_it(rendered: Callable[..., dict[str, Any]]) -> None:
    change = diff_renders(rendered(), rendered(cidr="10.1.0.0/16"))
    by_name = {c.name: c for c in change.changed}
    assert by_name["private-0"].replaces and by_name["vpc"].replaces
    cpu = by_name["cpu"]  # its subnetIds wait for the new subnet: ForceNew on a node group
    assert cpu.replaces and cpu.cascaded
    assert [(p.path, p.replaces) for p in cpu.changes] == [("subnetIds[0]", True)] or any(
        p.path.startswith("subnetIds") and p.replaces for p in cpu.changes
    )


def test_the_replacement_table_was_checked_against_the_installed_sdks() -> None:
    import importlib.metadata

    from mlplat.review.replacements import table

    data = table()
    for package, version in data["pinned"].items():
        installed = ".".join(importlib.metadata.version(package).split(".")[:2])
        assert installed == version, (
            f"{package} is {installed}, the replace-on-change table was checked against "
            f"{version}: re-check review/replacements.json and update `pinned`"
        )
    assert all(
        entry["source"].startswith(
            (
                "ForceNew",
                "every",
                "immutable",
                "pulumi-",
                "Service",
                "Persistent",
                "https://github.com/hashicorp/terraform-provider-aws/blob/",
            )
        )
        for entry in data["types"].values()
    )


def _upstream_script() -> Any:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "scripts" / "replacements_from_upstream.py"
    spec = importlib.util.spec_from_file_location("replacements_from_upstream", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_replacement_table_records_the_installed_upstream_versions() -> None:
    import importlib.metadata

    from mlplat.review.replacements import table

    upstream = table()["upstream"]
    for package in ("pulumi_aws", "pulumi_kubernetes"):
        assert upstream[package].split(".")[:2] == importlib.metadata.version(package).split(".")[:2], package


def test_every_replace_on_change_property_is_an_input_of_the_installed_sdk() -> None:
    from mlplat.review.replacements import table

    script = _upstream_script()
    for type_, entry in table()["types"].items():
        inputs = set(script.sdk_input_names(type_).values())
        missing = [p for p in entry["replace_on_change"] if p.split(".")[0] not in inputs]
        assert not missing, f"{type_}: {missing} are not inputs of the installed SDK's resource"


GO_FIXTURE = """
// @SDKResource("aws_thing", name="Thing")
func resourceThing() *schema.Resource {
	return &schema.Resource{
		SchemaFunc: func() map[string]*schema.Schema {
			return map[string]*schema.Schema{
				names.AttrVPCID: {
					Type:     schema.TypeString,
					Required: true,
					ForceNew: true, // replaces
				},
				"description": {Type: schema.TypeString, Optional: true},
				"vpc_config": {
					Type: schema.TypeList,
					Elem: &schema.Resource{
						Schema: map[string]*schema.Schema{
							names.AttrSubnetIDs: {Type: schema.TypeSet, Required: true, ForceNew: true},
							"endpoint_public_access": {Type: schema.TypeBool, Optional: true},
						},
					},
				},
				"ipv6_cidr_block": {Type: schema.TypeString, Optional: true},
			}
		},
		CustomizeDiff: customdiff.ForceNewIf("ipv6_cidr_block", func(context.Context, *schema.ResourceDiff, any) bool {
			return true
		}),
	}
}

// @FrameworkResource("aws_other", name="Other")
func (r *otherResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Attributes: map[string]schema.Attribute{
			names.AttrName: schema.StringAttribute{
				Required: true,
				PlanModifiers: []planmodifier.String{
					stringplanmodifier.RequiresReplace(),
				},
			},
			"retention": schema.Int64Attribute{Optional: true},
		},
	}
}
"""


def test_the_extraction_script_reads_sdkv2_nested_and_framework_schemas() -> None:
    script = _upstream_script()
    thing = script.extract(GO_FIXTURE, "aws_thing")
    assert thing.force_new == ["vpc_config.subnet_ids", "vpc_id"]
    assert thing.conditional == ["ipv6_cidr_block"]
    other = script.extract(GO_FIXTURE, "aws_other")
    assert (other.force_new, other.conditional) == (["name"], [])
    inputs = script.sdk_input_names("aws:eks/cluster:Cluster")
    assert script.wire_path("vpc_config.subnet_ids", inputs) == "vpcConfig.subnetIds"
    assert (
        script.wire_path("encryption_configuration", script.sdk_input_names("aws:ecr/repository:Repository"))
        == "encryptionConfigurations"
    )


OLD_GO_FIXTURE = """
func ResourceThing() *schema.Resource {
	return &schema.Resource{
		Schema: map[string]*schema.Schema{
			"name":     {Type: schema.TypeString, Required: true, ForceNew: true},
			"policy":   {Type: schema.TypeString, Required: true},
			"compute_config": {Type: schema.TypeList, Optional: true,
				Elem: &schema.Resource{
					Schema: map[string]*schema.Schema{
						"node_role_arn": {Type: schema.TypeString, Optional: true},
					},
				},
			},
		},
		CustomizeDiff: func(ctx context.Context, rd *schema.ResourceDiff, meta any) error {
			return rd.ForceNew("compute_config.0.node_role_arn")
		},
	}
}
"""


def test_the_extraction_script_reads_a_file_from_before_the_annotations() -> None:
    # Older stored versions have no @SDKResource annotation; such a file defines one resource and is read whole.
    script = _upstream_script()
    thing = script.extract(OLD_GO_FIXTURE, "aws_thing")
    assert (thing.force_new, thing.top_level) == (["name"], ["compute_config", "name", "policy"])
    assert thing.conditional == ["compute_config.node_role_arn"]  # rd.ForceNew, list index dropped
    with pytest.raises(ValueError, match="aws_absent"):  # an annotated file must annotate the type asked for
        script.extract(GO_FIXTURE, "aws_absent")


def test_the_extraction_script_flags_a_source_older_than_the_sdk(tmp_path: Path) -> None:
    # A NAT gateway schema from before regional NAT gateways: the installed SDK has inputs it does not define.
    go = tmp_path / "internal" / "service" / "ec2" / "vpc_nat_gateway.go"
    go.parent.mkdir(parents=True)
    go.write_text("""
// @SDKResource("aws_nat_gateway", name="NAT Gateway")
func resourceNATGateway() *schema.Resource {
	return &schema.Resource{
		Schema: map[string]*schema.Schema{
			"allocation_id":     {Optional: true, ForceNew: true},
			"connectivity_type": {Optional: true, ForceNew: true},
			names.AttrSubnetID:  {Required: true, ForceNew: true},
			names.AttrTags:      tftags.TagsSchema(),
		},
	}
}
""")
    script = _upstream_script()
    entry = {
        "replace_on_change": [],
        "source": "",
        "upstream_file": "internal/service/ec2/vpc_nat_gateway.go",
        "upstream_resource": "aws_nat_gateway",
    }
    new = script.regenerate("aws:ec2/natGateway:NatGateway", entry, tmp_path, "v0", {})
    assert new["replace_on_change"] == ["allocationId", "connectivityType", "subnetId"]
    assert {"availabilityMode", "vpcId", "privateIp"} <= set(new["source_lacks_sdk_inputs"])
    assert "region" not in new["source_lacks_sdk_inputs"] and "tags" not in new["source_lacks_sdk_inputs"]


class _Group(pulumi.ComponentResource):
    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"test:index:Group{name.upper()}", name, None, opts)  # a URN names its parents' types


def moving_role(parent: str, alias: bool) -> Callable[[], None]:
    """A role (with an inline policy under it) that lives under component `parent`; `alias` keeps it from "a"."""

    def program() -> None:
        groups = {name: _Group(name) for name in ("a", "b")}
        aliases = [pulumi.Alias(parent=groups["a"])] if alias else None
        role = aws.iam.Role(
            "role", assume_role_policy="{}", opts=pulumi.ResourceOptions(parent=groups[parent], aliases=aliases)
        )
        aws.iam.RolePolicy("policy", role=role.name, policy="{}", opts=pulumi.ResourceOptions(parent=role))

    return program


def test_a_resource_its_alias_keeps_is_not_deleted_and_recreated_and_its_children_move_with_it(
    render_program: Callable[..., Render],
) -> None:
    # As Pulumi matches them: the role's alias names its old parent, and the policy under it follows its parent's
    # alias without one of its own. Without the alias, both are a delete plus a create.
    def render(parent: str, alias: bool) -> dict[str, Any]:
        return render_program(moving_role(parent, alias), config={"aws:region": "us-east-1"}, stack="dev").to_json()

    before = render("a", alias=False)
    kept = diff_renders(before, render("b", alias=True))
    assert kept.empty and not kept.added and not kept.removed
    assert sorted(urn.rsplit("::", 1)[-1] for urn in kept.moved) == ["policy", "role"]
    assert all("test:index:GroupB$aws:iam" in new for new in kept.moved.values())
    assert "2 of them under a new URN, kept by their aliases" in to_markdown(kept)
    lost = diff_renders(before, render("b", alias=False))
    assert sorted(r.name for r in lost.removed) == sorted(r.name for r in lost.added) == ["policy", "role"]
    assert not lost.moved


def secret_parameters(cidr: str) -> Callable[[], None]:
    """A VPC and two SSM parameters with secret values, both waiting for the VPC: one value is built from the
    VPC's id, the other is not."""

    def program() -> None:
        vpc = aws.ec2.Vpc("vpc", cidr_block=cidr)
        value = pulumi.Output.secret(vpc.id.apply(lambda i: f"id={i}"))
        aws.ssm.Parameter("from-vpc", type="SecureString", value=value)
        aws.ssm.Parameter(
            "unrelated",
            type="SecureString",
            value=pulumi.Output.secret("hunter2"),
            opts=pulumi.ResourceOptions(depends_on=[vpc]),
        )

    return program


def test_a_masked_input_cascades_only_when_it_takes_the_replaced_resources_output(
    render_program: Callable[..., Render],
) -> None:
    # A secret input is masked in the render, so its value cannot show whether it carries the replaced VPC's id;
    # the property dependencies the engine records can. Waiting for the VPC (depends_on) is not taking its output.
    def render(cidr: str) -> dict[str, Any]:
        return render_program(secret_parameters(cidr), config={"aws:region": "us-east-1"}, stack="dev").to_json()

    before, after = render("10.0.0.0/16"), render("10.1.0.0/16")
    changed = {c.name: c for c in diff_renders(before, after).changed}
    assert "vpc" in changed and changed["vpc"].replaces
    assert [(p.path, p.cause is not None) for p in changed["from-vpc"].changes] == [("value", True)]
    assert "unrelated" not in changed
    # A render from before property dependencies were recorded keeps the cautious reading: masked may carry it.
    for record in before["resources"] + after["resources"]:
        (record.get("options") or {}).pop("property_dependencies", None)
    assert "unrelated" in {c.name for c in diff_renders(before, after).changed}
