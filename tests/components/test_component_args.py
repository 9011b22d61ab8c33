"""Components are built from their Args object or from the same fields as keyword arguments, never from both."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlplat.components.network import Network, NetworkArgs
from mlplat.components.registry import ContainerRegistry, ContainerRegistryArgs
from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs
from mlplat.infra.engine import Render


def test_keyword_arguments_build_the_same_resources_as_the_args_object(render_program: Callable[..., Render]) -> None:
    region = {"aws:region": "us-east-1"}
    with_args = render_program(
        lambda: ArtifactStore("models", ArtifactStoreArgs(protect=False, force_destroy=True)), config=region
    )
    with_kwargs = render_program(lambda: ArtifactStore("models", protect=False, force_destroy=True), config=region)
    assert with_kwargs.to_json() == with_args.to_json()
    network = render_program(lambda: Network("net", cidr_block="10.8.0.0/16", az_count=2), config=region)
    assert network.one("aws:ec2/vpc:Vpc", "net-vpc").inputs["cidrBlock"] == "10.8.0.0/16"
    registry = {"name_prefix": "team", "images": {"serving": "example/serving:1.0"}, "cuda_repositories": []}
    assert (
        render_program(lambda: ContainerRegistry("reg", **registry), config=region).to_json()
        == render_program(lambda: ContainerRegistry("reg", ContainerRegistryArgs(**registry)), config=region).to_json()
    )


def test_args_and_keywords_together_are_refused() -> None:
    with pytest.raises(
        TypeError,
        match=r"ArtifactStore: give an ArtifactStoreArgs or keyword arguments, not both "
        r"\(keyword arguments \['protect'\]\)",
    ):
        ArtifactStore("models", ArtifactStoreArgs(), protect=False)


def test_a_keyword_the_args_do_not_have_is_refused_with_the_fields_it_has() -> None:
    with pytest.raises(TypeError, match=r"Network: \['cidr'\] are not fields of NetworkArgs; its fields: .*cidr_block"):
        Network("net", cidr="10.8.0.0/16")
    with pytest.raises(TypeError, match=r"Network: args must be a NetworkArgs, not ArtifactStoreArgs"):
        Network("net", ArtifactStoreArgs())  # type: ignore[arg-type]


def test_keyword_values_are_validated_like_the_args_objects() -> None:
    with pytest.raises(ValueError) as from_kwargs:
        Network("net", cidr_block="10.8.0.0/8")
    with pytest.raises(ValueError) as from_args:
        NetworkArgs(cidr_block="10.8.0.0/8")
    assert str(from_kwargs.value) == str(from_args.value)


def test_the_package_exports_every_public_component_and_its_args() -> None:
    import inspect
    import subprocess
    import sys

    import mlplat.components as package

    for name in package.__all__:
        exported = getattr(package, name)
        assert exported.__name__ == name and exported.__module__.startswith("mlplat.components.")
    pairs = [n[:-4] for n in package.__all__ if n.endswith("Args") and n[:-4] in package.__all__]
    assert len(pairs) == 12
    for component in pairs:
        kinds = {p.kind for p in inspect.signature(getattr(package, component)).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD in kinds, f"{component} takes no keyword arguments"
    # Lazy: importing the package itself loads no provider SDK.
    probe = "import sys, mlplat.components; print('pulumi_aws' in sys.modules, 'pulumi_kubernetes' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    with pytest.raises(AttributeError, match="has no attribute 'Netwrok'"):
        package.Netwrok  # noqa: B018
