"""The offline engine runs ordinary Pulumi programs: stack references, data lookups, transforms, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pytest

from mlplat.infra.engine import STACK_REFERENCES_KEY, ProgramError, program_from_path, render

BUCKET = "aws:s3/bucket:Bucket"


def run(program: object, **kwargs: object):  # type: ignore[no-untyped-def]
    return render(program, project="team", stack="dev", **kwargs)  # type: ignore[arg-type]


def test_stack_references_read_outputs_from_the_config_or_the_caller() -> None:
    def program() -> None:
        network = pulumi.StackReference("acme/network/prod")
        pulumi.export("vpc", network.get_output("vpcId"))
        pulumi.export("subnets", network.require_output("privateSubnetIds"))

    outputs = {"vpcId": "vpc-0abc", "privateSubnetIds": ["subnet-a", "subnet-b"]}
    from_config = run(program, config={STACK_REFERENCES_KEY: json.dumps({"acme/network/prod": outputs})})
    assert from_config.outputs == {"vpc": "vpc-0abc", "subnets": ["subnet-a", "subnet-b"]}
    given = run(program, stack_references={"acme/network/prod": {**outputs, "vpcId": "vpc-given"}})
    assert given.outputs["vpc"] == "vpc-given"
    # Read, not managed: a stack reference is no resource of the stack.
    assert [r.type for r in given.resources] == ["pulumi:pulumi:Stack"]


def test_a_stack_reference_without_outputs_says_where_to_give_them() -> None:
    with pytest.raises(
        ProgramError,
        match=r"StackReference 'acme/network/prod': no outputs for it offline "
        r"\(given: none\); put them in the stack config as offline:stackReferences",
    ):
        run(lambda: pulumi.StackReference("acme/network/prod").get_output("vpcId"))


def test_common_lookups_answer_deterministically() -> None:
    def program() -> None:
        document = aws.iam.get_policy_document_output(
            statements=[
                aws.iam.GetPolicyDocumentStatementArgs(actions=["s3:GetObject", "s3:ListBucket"], resources=["*"]),
                aws.iam.GetPolicyDocumentStatementArgs(
                    effect="Deny",
                    actions=["s3:*"],
                    resources=["*"],
                    conditions=[
                        aws.iam.GetPolicyDocumentStatementConditionArgs(
                            test="Bool", variable="aws:SecureTransport", values=["false"]
                        )
                    ],
                ),
            ]
        )
        cluster = aws.eks.get_cluster_output(name="shared")
        subnets = aws.ec2.get_subnets_output(
            filters=[aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[cluster.vpc_config.vpc_id])]
        )
        pulumi.export("policy", document.json)
        pulumi.export("endpoint", cluster.endpoint)
        pulumi.export("issuer", cluster.identities[0].oidcs[0].issuer)
        pulumi.export("subnets", subnets.ids)
        pulumi.export("account", aws.get_caller_identity_output().account_id)

    first, second = run(program), run(program)
    assert first.outputs == second.outputs
    assert json.loads(first.outputs["policy"])["Statement"] == [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]
    assert first.outputs["endpoint"].endswith(".eks.amazonaws.com")
    assert first.outputs["issuer"].startswith("https://oidc.eks.us-east-1.amazonaws.com/id/")
    assert len(first.outputs["subnets"]) == 3 and first.outputs["account"] == "123456789012"


def test_an_unsupported_lookup_is_named() -> None:
    with pytest.raises(ProgramError, match=r"no answer for the data source 'aws:route53/getZone:getZone'"):
        run(lambda: pulumi.export("zone", aws.route53.get_zone_output(name="example.com").zone_id))


def test_transforms_and_transformations_change_what_is_registered() -> None:
    def tag(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult:
        props = {**args.props, "tags": {"team": "search"}}
        return pulumi.ResourceTransformResult(
            props=props, opts=pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(protect=True))
        )

    def legacy(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
        return pulumi.ResourceTransformationResult({**args.props, "forceDestroy": True}, args.opts)

    def program() -> None:
        aws.s3.Bucket("own", opts=pulumi.ResourceOptions(transforms=[tag]))
        aws.s3.Bucket("legacy", opts=pulumi.ResourceOptions(transformations=[legacy]))
        pulumi.runtime.register_resource_transform(
            lambda a: pulumi.ResourceTransformResult(props={**a.props, "bucketPrefix": "acme-"}, opts=a.opts)
        )
        aws.s3.Bucket("after-stack-transform")

    stack = run(program)
    own, old, later = (stack.one(BUCKET, n) for n in ("own", "legacy", "after-stack-transform"))
    assert own.inputs["tags"] == {"team": "search"} and own.options["protect"] is True
    assert old.inputs["forceDestroy"] is True and "bucketPrefix" not in old.inputs
    assert later.inputs["bucketPrefix"] == "acme-"


def test_duplicate_urns_are_refused_as_pulumi_refuses_them() -> None:
    def program() -> None:
        aws.s3.Bucket("data")
        aws.s3.Bucket("data")

    urn = "urn:pulumi:dev::team::aws:s3/bucket:Bucket::data"
    with pytest.raises(ProgramError, match=f"Duplicate resource URN '{urn}'; try giving it a unique name"):
        run(program)


def test_errors_in_a_program_name_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "__main__.py").write_text(
        "import pulumi_aws as aws\n\naws.s3.Bucket('data')\nraise ValueError('the team\\'s own bug')\n"
    )
    with pytest.raises(ProgramError) as caught:
        run(program_from_path(tmp_path))
    assert str(caught.value).startswith("ValueError in the stack program: the team's own bug\n  at ")
    assert str(caught.value).endswith("__main__.py:4")


def test_a_failed_render_leaves_nothing_behind_for_the_next() -> None:
    def broken() -> None:
        def boom(_: object) -> pulumi.ResourceTransformResult:
            raise RuntimeError("transform failed")

        aws.s3.Bucket("a", opts=pulumi.ResourceOptions(transforms=[boom]))
        aws.s3.Bucket("b")

    with pytest.raises(ProgramError):
        run(broken)
    assert [r.name for r in run(lambda: aws.s3.Bucket("fine")).by_type(BUCKET)] == ["fine"]


def test_resources_without_a_provider_get_the_default_one_from_the_stack_config() -> None:
    config = {
        "aws:region": "eu-west-1",
        "aws:defaultTags": json.dumps({"tags": {"owner": "search"}}),
        "aws:accessKey": "AKIAOFFLINE",
    }
    stack = run(lambda: aws.s3.Bucket("data"), config=config, secret_keys=["aws:accessKey"])
    (provider,) = stack.by_type("pulumi:providers:aws")
    assert provider.name.startswith("default_7_")  # as the Pulumi engine names it: default_<sdk version>
    assert provider.inputs == {
        "region": "eu-west-1",
        "defaultTags": {"tags": {"owner": "search"}},
        "accessKey": "[secret]",
    }
    assert stack.one(BUCKET).options["provider"] == provider.urn
