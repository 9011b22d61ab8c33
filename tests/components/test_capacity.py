"""Capacity: nodeadm's kubelet reservations, quantities, and pods that can never fit on their pools."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mlplat.components.capacity import (
    DAEMONSETS,
    INSTANCE_TYPES,
    UnknownInstanceTypeError,
    allocatable,
    check_fits,
    check_workload_capacity,
    cpu_millis,
    instance_type,
    kube_reserved_cpu_millis,
    kube_reserved_memory_mib,
    memory_bytes,
    parse_quantity,
    platform_daemonsets,
)
from mlplat.components.cluster import ClusterSpec
from mlplat.components.model_service import Canary, ModelServiceSpec
from mlplat.components.network import NetworkArgs
from mlplat.components.node_groups import NodePoolArgs, Taint, gpu_count
from mlplat.components.platform import MlPlatformArgs
from mlplat.components.pods import Resources
from mlplat.components.tracking import TrackingSpec
from mlplat.components.training_job import TrainingJobSpec

GPU_TAINT = Taint.parse("nvidia.com/gpu=true:NoSchedule")


def cpu_pool(*types: str, name: str = "cpu") -> NodePoolArgs:
    return NodePoolArgs(name=name, instance_types=list(types), labels={"workload": "general"})


def gpu_pool(*types: str, name: str = "gpu") -> NodePoolArgs:
    return NodePoolArgs(
        name=name,
        instance_types=list(types),
        min_size=0,
        max_size=2,
        labels={"workload": "gpu"},
        taints=[GPU_TAINT],
        ami_type="AL2023_x86_64_NVIDIA",
    )


DEV = [cpu_pool("t3.large", "t3a.large"), gpu_pool("g5.xlarge", "g6.xlarge", "g4dn.xlarge")]
PRODUCTION = [
    cpu_pool("m6i.xlarge", "m6a.xlarge", "m5.xlarge"),
    gpu_pool("g5.xlarge", "g6.xlarge", "g4dn.xlarge", "g5.2xlarge", "g6.2xlarge"),
]


# nodeadm's own expectations: its e2e cases run on a mocked 2-CPU m4.xlarge (58 max pods) and expect
# kubeReserved cpu 70m with memory 893Mi (58 pods), 739Mi (44), 915Mi (60) and 1465Mi (110, an unknown type).
@pytest.mark.parametrize(("max_pods", "mib"), [(58, 893), (44, 739), (60, 915), (110, 1465), (29, 574)])
def test_memory_reservation_is_nodeadms(max_pods: int, mib: int) -> None:
    assert kube_reserved_memory_mib(max_pods) == mib


@pytest.mark.parametrize(
    ("millis", "reserved"),
    [
        (1000, 60),  # 6% of the first core
        (2000, 70),  # + 1% of the second: nodeadm e2e kubelet-config-dir expects 70m on 2 CPUs
        (4000, 80),  # + 0.5% of cores 3-4
        (8000, 90),  # + 0.25% of the rest
        (48000, 190),
        (500, 30),  # a partial first core, integer division as in Go
    ],
)
def test_cpu_reservation_is_nodeadms(millis: int, reserved: int) -> None:
    assert kube_reserved_cpu_millis(millis) == reserved


def test_max_pods_follow_the_eni_table() -> None:
    expected = {
        "m5.large": 29,
        "m5.xlarge": 58,
        "m5.4xlarge": 234,
        "t3.medium": 17,
        "t3.large": 35,
        "g4dn.xlarge": 29,
        "g5.xlarge": 58,
        "g5.12xlarge": 737,
        "p5.48xlarge": 100,
    }
    assert {name: INSTANCE_TYPES[name].max_pods for name in expected} == expected


def test_gpu_counts_agree_with_the_node_groups_table() -> None:
    for name, spec in INSTANCE_TYPES.items():
        assert (gpu_count(name) or 0) == spec.gpus, name


def test_allocatable_subtracts_reservations_eviction_and_daemonsets() -> None:
    # t3.large: 2000m - 70m kubeReserved - 180m DaemonSets (aws-node 50, kube-proxy 100, ebs-csi-node 30);
    # 8192Mi - 615 (7.5% VM overhead) - 640 (11*35+255) - 100 (eviction) - 120 (ebs-csi-node).
    assert allocatable("t3.large") == (1750, 6717, 0)
    # g5.xlarge: 4000 - 80 - 180; 16384 - 1229 - 893 - 100 - 120; the device plugin requests nothing.
    assert allocatable("g5.xlarge") == (3740, 14042, 1)
    assert allocatable("t3.large", []) == (1930, 6837, 0)


def test_daemonsets_are_declared_with_their_sources() -> None:
    assert all(d.source for d in DAEMONSETS.values())
    assert [d.name for d in platform_daemonsets(monitoring=False)] == [
        "aws-node",
        "kube-proxy",
        "ebs-csi-node",
        "nvidia-device-plugin",
    ]
    assert "node-exporter" in [d.name for d in platform_daemonsets(monitoring=True)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("4Gi", Decimal(4 * 2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1Ki", Decimal(1024)),
        ("1Ti", Decimal(2**40)),
        ("2G", Decimal(2 * 10**9)),
        ("1k", Decimal(1000)),
        ("3M", Decimal(3 * 10**6)),
        ("1e3", Decimal(1000)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_cpu_and_memory_units() -> None:
    assert [cpu_millis(q) for q in ("500m", "2", "1.5", "0.1", "1500m", "0.0001")] == [500, 2000, 1500, 100, 1500, 1]
    assert memory_bytes("1Gi") == 2**30 and memory_bytes("1G") == 10**9 and memory_bytes("1.5Gi") == 3 * 2**29


@pytest.mark.parametrize("text", ["", "abc", "1Gb", "-1", "1 Gi", "m"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


def test_old_dev_training_request_does_not_fit_t3_large() -> None:
    assert check_fits("trainingJobs.digits.resources", "2", "4Gi", 0, DEV) == [
        "trainingJobs.digits.resources: cpu '2' does not fit on t3.large (pool 'cpu'), which has 1.75 CPU and "
        "6.5 GiB allocatable after kubelet reservations and DaemonSets; the largest request that fits is "
        "cpu '1750m', memory '6717Mi'"
    ]


def test_old_production_training_request_does_not_fit_the_xlarge_gpus() -> None:
    assert check_fits("trainingJobs.digits.resources", "4", "16Gi", 1, PRODUCTION) == [
        "trainingJobs.digits.resources: cpu '4' and memory '16Gi' do not fit on g5.xlarge (pool 'gpu'), which has "
        "3.74 CPU, 13.7 GiB and 1 GPU allocatable after kubelet reservations and DaemonSets; the largest request "
        "that fits is cpu '3740m', memory '14042Mi', gpus 1"
    ]


def test_new_requests_fit() -> None:
    assert check_fits("trainingJobs.digits.resources", "1500m", "4Gi", 0, DEV) == []
    assert check_fits("trainingJobs.digits.resources", "3", "12Gi", 1, PRODUCTION) == []
    # Exactly the largest request that fits, fits.
    assert check_fits("x", "3740m", "14042Mi", 1, PRODUCTION) == []
    assert check_fits("x", "3741m", "14042Mi", 1, PRODUCTION) != []


def test_the_smallest_type_of_the_pool_decides() -> None:
    # g5.2xlarge alone would host 4 CPU / 16Gi; the autoscaler may launch g4dn.xlarge instead.
    assert check_fits("x", "4", "16Gi", 1, [cpu_pool("m6i.xlarge"), gpu_pool("g5.2xlarge")]) == []
    (problem,) = check_fits("x", "4", "16Gi", 1, [cpu_pool("m6i.xlarge"), gpu_pool("g5.2xlarge", "g4dn.xlarge")])
    assert "do not fit on g4dn.xlarge (pool 'gpu')" in problem


def test_memory_only_problem_names_memory() -> None:
    (problem,) = check_fits("services.digits.resources", "1", "7Gi", 0, DEV)
    assert problem.startswith("services.digits.resources: memory '7Gi' does not fit on t3.large (pool 'cpu')")


def test_a_bigger_untainted_pool_hosts_what_a_small_one_cannot() -> None:
    pools = [*DEV, cpu_pool("m6i.2xlarge", name="big")]
    assert check_fits("x", "4", "16Gi", 0, pools) == []


def test_too_many_gpus() -> None:
    (problem,) = check_fits("x", "1", "1Gi", 2, DEV)
    assert problem.startswith(
        "x: gpus 2 does not fit on g5.xlarge (pool 'gpu'), which has 3.74 CPU, 13.7 GiB and 1 GPU allocatable"
    )
    assert check_fits("x", "1", "1Gi", 4, [cpu_pool("m5.large"), gpu_pool("g5.12xlarge")]) == []


def test_gpu_pod_without_a_gpu_pool() -> None:
    assert check_fits("trainingJobs.digits.resources", "1", "1Gi", 1, [cpu_pool("m6i.xlarge")]) == [
        "trainingJobs.digits.resources: no node pool can host this pod: a GPU pod (gpus 1) runs only on a pool "
        "labelled workload=gpu whose taints it tolerates (nvidia.com/gpu=true:NoSchedule), with an NVIDIA AMI; "
        "pools: 'cpu': no label workload=gpu"
    ]


def test_gpu_pod_does_not_tolerate_other_taints() -> None:
    odd = NodePoolArgs(
        name="gpu",
        instance_types=["g5.xlarge"],
        min_size=0,
        labels={"workload": "gpu"},
        taints=[GPU_TAINT, Taint.parse("team=research:NoSchedule")],
        ami_type="AL2023_x86_64_NVIDIA",
    )
    (problem,) = check_fits("x", "1", "1Gi", 1, [cpu_pool("m5.large"), odd])
    assert "'gpu': taint team=research:NoSchedule not tolerated" in problem


def test_cpu_pod_with_only_tainted_pools() -> None:
    tainted = NodePoolArgs(
        name="inference",
        instance_types=["c6i.2xlarge"],
        labels={"workload": "inference"},
        taints=[Taint.parse("workload=inference:NoSchedule")],
    )
    assert check_fits("services.digits.resources", "1", "1Gi", 0, [tainted, DEV[1]]) == [
        "services.digits.resources: no node pool can host this pod: a CPU pod has no nodeSelector and no "
        "tolerations, so it runs only on an untainted pool; pools: 'inference': taint "
        "workload=inference:NoSchedule not tolerated; 'gpu': taint nvidia.com/gpu=true:NoSchedule not tolerated"
    ]


def test_prefer_no_schedule_does_not_keep_pods_off() -> None:
    soft = NodePoolArgs(name="soft", instance_types=["m5.large"], taints=[Taint.parse("spot=true:PreferNoSchedule")])
    assert check_fits("x", "1", "1Gi", 0, [soft]) == []


def test_unknown_instance_type_is_named_with_how_to_add_it() -> None:
    with pytest.raises(UnknownInstanceTypeError, match=r"instance type 'm7a\.large' is not in mlplat's capacity table"):
        instance_type("m7a.large")
    (problem,) = check_fits("services.digits.resources", "1", "1Gi", 0, [cpu_pool("m7a.large")])
    assert problem.startswith(
        "services.digits.resources: instance type 'm7a.large' (pool 'cpu') is not in mlplat's capacity table"
    )
    assert "add it to INSTANCE_TYPES in mlplat/components/capacity.py" in problem
    assert "aws ec2 describe-instance-types --instance-types m7a.large" in problem


def test_bad_quantity_in_a_request_is_a_problem_not_a_crash() -> None:
    (problem,) = check_fits("x", "two", "1Gi", 0, DEV)
    assert problem.startswith("x: 'two' is not a Kubernetes quantity")


def test_check_workload_capacity_covers_every_workload_of_a_platform() -> None:
    args = MlPlatformArgs(
        region="us-east-1",
        network=NetworkArgs(nat="single", interface_endpoints=False),
        cluster=ClusterSpec(node_pools=DEV),
        tracking=TrackingSpec(resources=Resources(cpu="2", memory="1Gi")),
        services={
            "digits": ModelServiceSpec(
                model_uri="models:/digits@champion",
                resources=Resources(cpu="1", memory="8Gi"),
                canary=Canary(model_uri="models:/digits@challenger"),
            )
        },
        training_jobs={
            "digits": TrainingJobSpec(resources=Resources(cpu="4", memory="16Gi", gpus=1)),
            "small": TrainingJobSpec(resources=Resources(cpu="1", memory="2Gi", gpus=0)),
        },
    )
    problems = check_workload_capacity(args)
    assert [p.split(":")[0] for p in problems] == [
        "tracking.resources",
        "services.digits.resources",
        "training_jobs.digits.resources",
    ]
