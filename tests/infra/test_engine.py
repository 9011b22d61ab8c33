"""The offline engine: what it records, how it masks secrets, and how it reports failures."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_random as random
import pytest

from mlplat.infra.engine import (
    MASK,
    ProgramError,
    Render,
    collector_paused,
    program_from_module,
    program_from_path,
    render,
)
from mlplat.infra.synth import render_stack

REQUIRED_TAGS = {"project", "environment", "owner", "cost-center"}


def test_every_resource_has_a_parent_chain_up_to_the_stack(production_stack: Render) -> None:
    stack_urn = production_stack.one("pulumi:pulumi:Stack").urn
    for record in production_stack.resources:
        if record.type == "pulumi:pulumi:Stack":
            continue
        chain = production_stack.ancestors(record)
        assert chain and chain[-1].urn == stack_urn, record.urn


def test_aws_resources_use_the_provider_with_the_default_tags(production_stack: Render, dev_stack: Render) -> None:
    for stack, env in ((production_stack, "production"), (dev_stack, "dev")):
        provider = stack.one("pulumi:providers:aws")
        tags = provider.inputs["defaultTags"]["tags"]
        assert set(tags) >= REQUIRED_TAGS and tags["environment"] == env
        for record in stack.resources:
            if record.custom and record.type.startswith("aws:"):
                assert record.options["provider"] == provider.urn, record.urn


def test_taggable_resources_carry_a_name_tag(production_stack: Render) -> None:
    taggable = [r for r in production_stack.resources if r.type.startswith("aws:") and "tags" in r.inputs]
    assert len(taggable) > 30
    assert all("Name" in r.inputs["tags"] for r in taggable)


def test_render_is_deterministic(production_stack: Render, repo_root: Path) -> None:
    assert render_stack("production", repo_root).dumps() == production_stack.dumps()


def test_json_render_is_sorted_and_complete(production_stack: Render) -> None:
    document = json.loads(production_stack.dumps())
    urns = [r["urn"] for r in document["resources"]]
    assert urns == sorted(urns)
    bucket = next(r for r in document["resources"] if r["type"] == "aws:s3/bucket:Bucket")
    assert set(bucket) == {"urn", "type", "name", "parent", "custom", "inputs", "options"}
    assert {"protect", "retain_on_delete", "depends_on", "provider"} <= set(bucket["options"])


def test_secrets_are_masked_in_inputs_and_outputs(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        password = random.RandomPassword("db", length=24, special=False)
        aws.ssm.Parameter("param", type="SecureString", value=password.result)
        aws.ssm.Parameter("derived", type="String", value=password.result.apply(lambda p: f"user:{p}"))
        pulumi.export("password", password.result)
        pulumi.export("configured", pulumi.Config("mlplat").require_secret("token"))

    stack = render_program(program, config={"mlplat:token": "hunter2-token"}, secret_keys=["mlplat:token"])
    assert stack.one("aws:ssm/parameter:Parameter", "param").inputs["value"] == MASK
    assert stack.one("aws:ssm/parameter:Parameter", "derived").inputs["value"] == MASK
    assert stack.outputs == {"password": MASK, "configured": MASK}
    text = stack.dumps()
    assert "hunter2-token" not in text and "user:" not in text


def test_one_resource_given_to_several_others_does_not_hang(render_program: Callable[..., Render]) -> None:
    # Pulumi's stock MockMonitor hangs or raises "attached to a different loop" here.
    def program() -> None:
        role = aws.iam.Role("shared", assume_role_policy="{}")
        for i in range(5):
            aws.iam.RolePolicyAttachment(f"attach-{i}", role=role.name, policy_arn=f"arn:aws:iam::aws:policy/p{i}")
        aws.iam.InstanceProfile("profile", role=role.name)

    stack = render_program(program)
    role = stack.one("aws:iam/role:Role")
    attachments = stack.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert len(attachments) == 5
    assert all(a.inputs["role"] == role.id and role.urn in a.options["depends_on"] for a in attachments)


def test_options_are_recorded(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        first = aws.s3.Bucket("first")
        aws.s3.Bucket(
            "second",
            opts=pulumi.ResourceOptions(
                protect=True, retain_on_delete=True, depends_on=[first], ignore_changes=["tags"]
            ),
        )

    second = render_program(program).one("aws:s3/bucket:Bucket", "second")
    assert second.options["protect"] and second.options["retain_on_delete"]
    assert second.options["ignore_changes"] == ["tags"]
    assert any(urn.endswith("::first") for urn in second.options["depends_on"])


class Broken(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("test:index:Broken", name)
        aws.s3.Bucket(f"{name}-ok", opts=pulumi.ResourceOptions(parent=self))
        raise RuntimeError("subnet math went wrong")


def test_program_errors_name_the_failing_component(render_program: Callable[..., Render]) -> None:
    with pytest.raises(ProgramError, match=r"RuntimeError in component 'platform-net' \(Broken\): subnet math"):
        render_program(lambda: Broken("platform-net"))


def test_the_collector_is_paused_during_a_render_and_restored_after_it(
    render_program: Callable[..., Render],
) -> None:
    seen: list[bool] = []
    render_program(lambda: seen.append(gc.isenabled()))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ProgramError):
        render_program(lambda: Broken("platform-net"))
    assert gc.isenabled(), "a failing program leaves the collector running"
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "a caller's own pause is kept"
    finally:
        gc.enable()


def test_a_render_after_asyncio_run_gets_an_event_loop(render_program: Callable[..., Render]) -> None:
    asyncio.run(asyncio.sleep(0))  # leaves the thread without a current event loop
    assert [r.name for r in render_program(lambda: aws.s3.Bucket("after")).by_type("aws:s3/bucket:Bucket")] == ["after"]


def test_renders_in_one_process_are_independent(render_program: Callable[..., Render]) -> None:
    one = render_program(lambda: aws.s3.Bucket("a"), stack="one")
    two = render_program(lambda: aws.s3.Bucket("b"), stack="two")
    assert [r.name for r in one.by_type("aws:s3/bucket:Bucket")] == ["a"]
    assert [r.name for r in two.by_type("aws:s3/bucket:Bucket")] == ["b"]
    # Each render records its own default provider, once.
    assert len(one.by_type("pulumi:providers:aws")) == len(two.by_type("pulumi:providers:aws")) == 1
    assert one.one("pulumi:pulumi:Stack").name == "mlplat-one"


def test_a_program_file_and_module_render(tmp_path: Path) -> None:
    (tmp_path / "__main__.py").write_text(
        "import pulumi, pulumi_aws as aws\n"
        "b = aws.s3.Bucket('team-bucket', bucket=pulumi.Config().require('bucket'))\n"
        "pulumi.export('name', b.bucket)\n"
    )
    stack = render(program_from_path(tmp_path), project="team", stack="dev", config={"team:bucket": "team-data"})
    assert stack.outputs == {"name": "team-data"}
    with pytest.raises(FileNotFoundError):
        program_from_path(tmp_path / "missing")
    module_stack = render(
        program_from_module("mlplat.infra"),
        project="mlplat",
        stack="dev",
        config={"aws:region": "us-east-1", "mlplat:environment": "dev"},
    )
    assert module_stack.by_type("mlplat:network:Network")


# Stateful resources must keep their URNs: a rename or re-parent without `aliases` makes the next
# `pulumi up` replace them (and lose the data). Changing this list must be a deliberate act.
STATEFUL_URNS = {
    "production": [
        "urn:pulumi:production::mlplat::mlplat:platform:MlPlatform$mlplat:storage:ArtifactStore$aws:s3/bucket:Bucket"
        "::mlplat-production-artifacts",
        "urn:pulumi:production::mlplat::mlplat:platform:MlPlatform$mlplat:storage:ArtifactStore$aws:kms/key:Key"
        "::mlplat-production-artifacts-key",
        "urn:pulumi:production::mlplat::mlplat:platform:MlPlatform$mlplat:tracking:Tracking$aws:rds/instance:Instance"
        "::mlplat-production-tracking-db",
    ],
}


def test_stateful_resources_keep_their_urns_and_protection(production_stack: Render) -> None:
    urns = {r.urn: r for r in production_stack.resources}
    for urn in STATEFUL_URNS["production"]:
        assert urn in urns, f"{urn} was renamed or re-parented: add an alias or the next `pulumi up` replaces it"
        assert urns[urn].options["protect"] and urns[urn].options["retain_on_delete"]
