"""Values Kubernetes or AWS would refuse fail when the args are built: quantities, names, model URIs, schedules."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import config, problems

from mlplat.components.cluster import ClusterArgs
from mlplat.components.node_groups import NodePoolArgs
from mlplat.components.pods import Resources
from mlplat.components.registry import ContainerRegistryArgs
from mlplat.components.validation import (
    DerivedName,
    InvalidValue,
    check_certificate_arn,
    check_memory,
    check_model_uri,
    check_name,
    check_schedule,
)
from mlplat.infra.config import load
from mlplat.infra.stacks import load_stack

ROOT = Path(__file__).resolve().parents[2]
CPU_ALLOWED = "use cores (e.g. 2 or 0.5) or millicores (e.g. 500m), more than 0"
MEMORY_ALLOWED = (
    "use bytes with a binary suffix (Ki, Mi, Gi, Ti) or a decimal one (k, M, G, T), more than 0, e.g. 512Mi or 4Gi"
)


# -- quantities (Resources) -----------------------------------------------------------------------------------


def test_a_cpu_that_is_not_a_quantity_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        Resources(cpu="2 cores")
    assert f"Resources.cpu='2 cores': not a Kubernetes CPU quantity; {CPU_ALLOWED}" in str(caught.value)


def test_a_memory_in_gigabytes_written_gb_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        Resources(memory="2GB")
    assert f"Resources.memory='2GB': not a Kubernetes memory quantity; {MEMORY_ALLOWED}" in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpu": "1Gi"}, f"Resources.cpu='1Gi': not a Kubernetes CPU quantity; {CPU_ALLOWED}"),
        ({"cpu": "0"}, f"Resources.cpu='0': not a CPU request (it is zero); {CPU_ALLOWED}"),
        ({"cpu": "-1"}, f"Resources.cpu='-1': not a Kubernetes CPU quantity; {CPU_ALLOWED}"),
        (
            {"memory": "500m"},
            "Resources.memory='500m': not a Kubernetes memory quantity: 'm' means a thousandth, of a "
            f"byte here, not mega (M) or mebi (Mi); {MEMORY_ALLOWED}",
        ),
        (
            {"memory": "0.1Ki"},
            "Resources.memory='0.1Ki': not a Kubernetes memory quantity: it is not a whole number "
            f"of bytes; {MEMORY_ALLOWED}",
        ),
        ({"memory": "4gi"}, f"Resources.memory='4gi': not a Kubernetes memory quantity; {MEMORY_ALLOWED}"),
        ({"gpus": -1}, "Resources.gpus=-1: not a GPU count; use a whole number, 0 or more"),
        ({"gpus": 0.5}, "Resources.gpus=0.5: not a GPU count; use a whole number, 0 or more"),
        ({"gpus": True}, "Resources.gpus=True: not a GPU count; use a whole number, 0 or more"),
    ],
)
def test_quantities_kubernetes_would_refuse_or_misread_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Resources(**kwargs)
    assert message in str(caught.value)  # a pydantic ValidationError: the field's location, then the message


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("500m", "1Gi"), ("2", "512Mi"), ("1.5", "2G"), ("0.25", "1.5Gi"), ("100m", "128974848"), ("3", "12Gi")],
)
def test_kubernetes_quantities_pass(cpu: str, memory: str) -> None:
    assert Resources(cpu=cpu, memory=memory, gpus=1).to_args().requests["memory"] == memory


def test_quantity_checks_reuse_the_capacity_parser() -> None:
    # One grammar for quantities: what the capacity check can parse is what Resources accepts (and no more).
    from mlplat.components.capacity import memory_bytes

    assert memory_bytes(check_memory("1.5Gi")) == 3 * 2**29
    with pytest.raises(InvalidValue):
        check_memory("1.5 Gi")


# -- names ----------------------------------------------------------------------------------------------------


def test_a_name_must_fit_the_strictest_name_derived_from_it() -> None:
    derived = [DerivedName("Service", "-canary"), DerivedName("CronJob", limit=52)]
    check_name("X", "a" * 52, derived, dns1035=True, why="Services")
    with pytest.raises(ValueError) as caught:
        check_name("X", "a" * 53, derived, dns1035=True, why="Services")
    assert str(caught.value) == (
        f"X name='{'a' * 53}': too long (53 characters); use lowercase letters, digits and '-', starting with a "
        "letter and ending with a letter or digit, at most 52 characters: it names Kubernetes objects, and the "
        f"strictest, CronJob '{'a' * 53}', may have at most 52; e.g. '{'a' * 52}'"
    )


@pytest.mark.parametrize(
    ("name", "dns1035", "ok"),
    [
        ("scorer-v2", True, True),
        ("a", True, True),
        ("2fast", True, False),
        ("2fast", False, True),
        ("-x", False, False),
        ("x-", False, False),
        ("x.y", False, False),
        ("Scorer", False, False),
        ("x_y", True, False),
    ],
)
def test_dns_label_rules(name: str, dns1035: bool, ok: bool) -> None:
    derived = [DerivedName("Service")]
    if ok:
        check_name("X", name, derived, dns1035=dns1035, why="w")
    else:
        with pytest.raises(ValueError, match=rf"X name='{name}': not a DNS-(1035|1123) label \(w\)"):
            check_name("X", name, derived, dns1035=dns1035, why="w")


# -- model URIs and certificates: one definition, used by the components and the stack config ---------------


def test_the_stack_config_uses_the_components_model_uri_check() -> None:
    from mlplat.infra import config_workloads

    assert not hasattr(config_workloads, "_MODEL_URI"), "one definition: mlplat.components.validation.MODEL_URI"
    with pytest.raises(InvalidValue) as caught:
        check_model_uri("digits-latest")
    assert str(caught.value) == (
        "'digits-latest' is not a model URI; use models:/<name>@<alias>, "
        "models:/<name>/<version>, runs:/<run id>/<path> or s3://<bucket>/<path>"
    )
    # One schema: a service in the stack file is the component's ModelServiceSpec, with its message.
    (problem,) = problems("dev", services={"digits": {"modelUri": "digits-latest"}})
    assert problem.startswith(
        "mlplat:services.digits.modelUri: ModelServiceArgs.model_uri='digits-latest': not a "
        "model URI; use models:/<name>@<alias>"
    )


@pytest.mark.parametrize(
    "uri", ["models:/digits", "models:/digits@", "file:///m", "/models/d", "s3://", "s3:///k", "gs://b/m", ""]
)
def test_model_uris_a_pod_cannot_load_are_refused(uri: str) -> None:
    with pytest.raises(InvalidValue):
        check_model_uri(uri)


def test_acm_certificate_arns_are_checked_by_shape() -> None:
    good = "arn:aws-us-gov:acm:us-gov-west-1:123456789012:certificate/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    assert check_certificate_arn(good) == good
    with pytest.raises(InvalidValue):
        check_certificate_arn(good.replace("0a1b2c3d", "0A1B2C3D"))
    marker = object()  # an Output, known only at deploy time: left to AWS
    assert check_certificate_arn(marker) is marker


# -- cron schedules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("", "it is empty"),
        ("0 3 * * 1 2026", "6 fields instead of 5"),
        ("0 3 1,,2 * *", "day of month '1,,2' has an empty list item"),
        ("0-5-9 3 * * *", "minute '0-5-9' has more than one '-'"),
        ("0/5/2 3 * * *", "minute '0/5/2' has more than one '/'"),
        ("*-5 3 * * *", "minute '*-5' is a range from '*'"),
        ("0 3 * * 1/x", "day of week step 'x' is not a number"),
        ("0 0 31 4,6,9,11 *", "day of month '31' never falls in month '4,6,9,11', so it never runs"),
        ("@every 90", "unknown descriptor '@every 90'"),
    ],
)
def test_cron_problems_are_named(schedule: str, problem: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        check_schedule(schedule)
    assert str(caught.value).startswith(f"{schedule!r} is not a cron schedule: {problem}; use 5 fields")


@pytest.mark.parametrize(
    "schedule",
    [
        "* * * * *",
        "0 0 29 2 *",
        "0 0 31 */2 *",
        "5/15 * * * *",
        "0 12 ? * SUN",
        "0 0 1 JAN,jul *",
        "@annually",
        "@midnight",
        "@every 1h30m",
        "@every 0",
    ],
)
def test_what_the_api_server_accepts_passes(schedule: str) -> None:
    assert check_schedule(schedule) == schedule


# -- the stack config -----------------------------------------------------------------------------------------


def test_config_quantities_and_schedules_use_the_component_checks() -> None:
    (problem,) = problems("dev", services={"digits": {"modelUri": "models:/d@a", "resources": {"cpu": "2 cores"}}})
    assert problem == (
        f"mlplat:services.digits.resources.cpu: Resources.cpu='2 cores': not a Kubernetes CPU "
        f"quantity; {CPU_ALLOWED} (got '2 cores')"
    )
    (problem,) = problems("dev", trainingJobs={"digits": {"schedule": "0 3 * * 7"}})
    assert problem.startswith(
        "mlplat:trainingJobs.digits.schedule: TrainingJobArgs.schedule='0 3 * * 7': not a cron "
        "schedule: day of week 7 is above the maximum 6"
    )
    # Quantities the old pattern refused but Kubernetes accepts now pass.
    cfg = load(config("dev", services={"digits": {"modelUri": "models:/d@a", "resources": {"memory": "1.5Gi"}}}))
    assert cfg.services["digits"].resources.memory == "1.5Gi"


def test_a_public_service_in_the_stack_config_needs_a_certificate_or_the_opt_out() -> None:
    (problem,) = problems("dev", services={"digits": {"modelUri": "models:/d@a", "internal": False}})
    assert problem == (
        "mlplat:services.digits: ModelServiceArgs.internal=False: an internet-facing ALB without certificate_arn "
        "serves plain HTTP, API keys and predictions in clear text; set certificate_arn to an ACM certificate "
        "(arn:aws:acm:<region>:<account id>:certificate/<id>), or allow_public_without_tls=True "
        "(flagged by mlplat check)"
    )
    (problem,) = problems(
        "dev",
        services={
            "digits": {
                "modelUri": "models:/d@a",
                "internal": False,
                "certificateArn": "arn:aws:acm:us-east-1:1:certificate/x",
            }
        },
    )
    assert problem.startswith(
        "mlplat:services.digits.certificateArn: ModelServiceArgs.certificate_arn="
        "'arn:aws:acm:us-east-1:1:certificate/x': not an ACM certificate ARN"
    )
    cert = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    args = load(
        config(
            "production", services={"digits": {"modelUri": "models:/d@a", "internal": False, "certificateArn": cert}}
        )
    ).services["digits"]
    assert (args.public, args.certificate_arn, args.authenticated) == (True, cert, True)
    waived = load(
        config(
            "dev", services={"digits": {"modelUri": "models:/d@a", "internal": False, "allowPublicWithoutTls": True}}
        )
    ).services["digits"]
    assert waived.allow_public_without_tls and waived.certificate_arn is None


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_the_shipped_stacks_still_load_with_internal_services(stack: str) -> None:
    cfg = load(load_stack(ROOT, stack).config)
    for service in cfg.services.values():
        assert not service.public and service.certificate_arn is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ContainerRegistryArgs(repositories="serving"),  # type: ignore[arg-type]
            "ContainerRegistryArgs.repositories='serving': a single string",
        ),
        (
            lambda: NodePoolArgs(name="cpu", instance_types="m6i.large"),  # type: ignore[arg-type]
            "'m6i.large' is a single string",
        ),
        (
            lambda: ClusterArgs(
                vpc_id="v",
                private_subnet_ids=["s"],
                region="us-east-1",
                endpoint_public_access=True,
                public_access_cidrs="52.94.0.0/22",
            ),  # type: ignore[arg-type]
            "'52.94.0.0/22' is a single string",
        ),
    ],
)
def test_a_string_where_a_list_of_names_belongs_is_refused(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message) + r", which would be read as one name per letter"):
        build()
