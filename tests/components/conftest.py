"""Fixtures for the Kubernetes workload components: render them with a k8s Provider, as a cluster gives."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pulumi_kubernetes as k8s
import pytest

from mlplat.infra.engine import Render, render
from mlplat.infra.mock_outputs import fake_certificate, kubeconfig


def render_on_cluster(build: Callable[[pulumi.ResourceOptions], object]) -> Render:
    """Render ``build(opts)`` with ``opts`` carrying a Kubernetes provider for a (mock) EKS cluster."""

    def program() -> None:
        config = kubeconfig("test", "https://example.eks.amazonaws.com", fake_certificate("test"), "us-east-1")
        provider = k8s.Provider("k8s", kubeconfig=pulumi.Output.secret(json.dumps(config)))
        build(pulumi.ResourceOptions(providers=[provider]))

    return render(program, project="mlplat", stack="test")


@pytest.fixture
def on_cluster() -> Callable[[Callable[[pulumi.ResourceOptions], object]], Render]:
    """``on_cluster(lambda opts: Component(..., opts=opts))`` renders it against a cluster's provider."""
    return render_on_cluster


def pod_spec(record_inputs: dict) -> dict:
    """The pod spec inside a Deployment, Job or CronJob's rendered inputs."""
    spec = record_inputs["spec"]
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


@pytest.fixture
def pod_of() -> Callable[[dict], dict]:
    return pod_spec
