"""The wheel a team installs, built like a release and used from a clean virtualenv outside the repository.

`python -m build` makes the sdist and then the wheel from that sdist (so the sdist is complete too). The wheel goes
into a fresh virtualenv, created in a temporary folder outside the repository, with the team example's own
requirements.txt (which asks for the `infra` extra) and without the serving/training extras (no torch: pip fetches
the Pulumi SDKs and boto3, not gigabytes). A second virtualenv gets the wheel alone, as the images get it without
their torch extras: no Pulumi SDK there, and `mlplat serve` / `mlplat train` still start. From a folder outside
the repository, the first virtualenv's `mlplat` renders, checks and prices a copy of examples/team-stack, and mypy,
pointed at its interpreter, resolves `mlplat.components` from the install.

One build and two installs per module; about a minute on a small machine, most of it pip (it uses pip's cache and
whatever index the environment configures). Run only these with ``pytest -m packaging``.
"""

from __future__ import annotations

import email.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "team-stack"

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

PACKAGE_FOLDERS = {
    "contracts": "mlplat.contracts",
    "components": "mlplat.components",
    "infra": "mlplat.infra",
    "policy": "mlplat.policy",
    "review": "mlplat.review",
    "demo": "mlplat.demo",
    "cli": "mlplat.cli",
    "serving": "mlplat.serving",
    "training": "mlplat.training",
}
"""The source folders and the import packages they become (pyproject's package-dir)."""

REQUIRED_IN_WHEEL = [
    "mlplat/contracts/__init__.py",
    "mlplat/contracts/training_config.py",
    "mlplat/components/__init__.py",
    "mlplat/components/network.py",
    "mlplat/components/dashboards/model-service.json",
    "mlplat/components/data/aws-load-balancer-controller-iam-policy-v2.13.0.json",
    "mlplat/infra/__init__.py",
    "mlplat/cli/app.py",
    "mlplat/policy/__init__.py",
    "mlplat/policy/framework.py",
    "mlplat/policy/rules/__init__.py",
    "mlplat/policy/rules/contracts/__init__.py",
    "mlplat/policy/pack.py",
    "mlplat/review/prices.json",
    "mlplat/review/replacements.json",
    "mlplat/serving/__init__.py",
    "mlplat/serving/Dockerfile",
    "mlplat/training/__init__.py",
    "mlplat/training/Dockerfile",
    *(f"mlplat/{folder}/py.typed" for folder in PACKAGE_FOLDERS),
]

_CACHES = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".mlplat",
    "node_modules",
    "mlruns",
    "mlflow.db",
    "venv",
)
_TOP_LEVEL = {".git", ".venv", "build", "dist"}


def not_source(folder: str, names: list[str]) -> set[str]:
    """What a checkout may hold besides the source (all of it git-ignored): a build must not see any of it."""
    ignored = set(_CACHES(folder, names))
    if Path(folder).resolve() == REPO_ROOT:
        ignored |= _TOP_LEVEL & set(names)
    return ignored


HEAVY_SDKS = [
    "pulumi_aws.*",
    "pulumi_kubernetes.*",
    "pulumi_eks.*",
    "pulumi_docker.*",
    "pulumi_random.*",
    "boto3.*",
    "botocore.*",
]
"""Generated SDKs mypy need not analyse to check the team's file (38 s instead of 2 s on a small machine)."""


@dataclass(frozen=True)
class Built:
    root: Path  # a temporary folder outside the repository; everything below lives in it
    source: Path  # the copy of the checkout the build ran on
    sdist: Path
    wheel: Path
    version: str


@dataclass(frozen=True)
class Installed:
    built: Built
    venv: Path
    python: Path
    env: dict[str, str]  # the environment a team's shell would have with the virtualenv activated
    workdir: Path  # an empty folder outside the repository: every command runs there
    team: Path  # a copy of examples/team-stack

    @property
    def mlplat(self) -> Path:
        return self.venv / "bin" / "mlplat"


def run(
    command: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(map(str, result.args))
    assert result.returncode == 0, (
        f"`{command}` exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n"
        f"{result.stderr[-6000:]}"
    )
    return result.stdout


def clean_environment(venv: Path | None = None) -> dict[str, str]:
    """This process's environment minus whatever could put the repository on a child's import path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "MYPYPATH"}
    }
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def shipped_files(source: Path) -> dict[str, str]:
    """Every file of the source packages that must ship, source path to wheel path: modules, JSON data, py.typed
    and Dockerfiles. A new subpackage, module or data file the build config forgets shows up here as missing."""
    shipped = {}
    for folder, package in PACKAGE_FOLDERS.items():
        for path in (source / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in {".py", ".json"} or path.name in {"py.typed", "Dockerfile"}:
                inside = path.relative_to(source / folder).as_posix()
                shipped[f"{folder}/{inside}"] = f"{package.replace('.', '/')}/{inside}"
    return shipped


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mlplat-packaging-") as name:
        root = Path(name).resolve()
        assert not root.is_relative_to(REPO_ROOT), f"the temporary folder {root} is inside the repository"
        yield root


@pytest.fixture(scope="module")
def built(outside: Path) -> Built:
    if importlib.util.find_spec("build") is None:
        pytest.fail("the `build` package is missing: it is in the dev extra (scripts/setup.sh installs it)")
    # Build from a copy, so that the build neither writes into the shared checkout nor sees its caches and builds.
    source = outside / "source"
    shutil.copytree(REPO_ROOT, source, ignore=not_source)
    dist = outside / "dist"
    succeeded(run([sys.executable, "-m", "build", "--outdir", dist, source], cwd=outside, env=clean_environment()))
    version = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"mlplat-{version}-py3-none-any.whl"
    assert sdist.name == f"mlplat-{version}.tar.gz"
    return Built(outside, source, sdist, wheel, version)


def new_install(built: Built, name: str, *requirements: Path) -> Installed:
    """A clean virtualenv ``<name>-venv`` with the wheel and ``requirements`` (files) installed, and a work folder
    holding a copy of the team example."""
    venv = built.root / f"{name}-venv"
    succeeded(run([sys.executable, "-m", "venv", venv], cwd=built.root, env=clean_environment()))
    python = venv / "bin" / "python"
    env = clean_environment(venv)
    workdir = built.root / f"{name}-work"
    workdir.mkdir()
    team = workdir / "team-stack"
    shutil.copytree(EXAMPLE, team, ignore=not_source)
    # The virtualenv is clean: nothing of mlplat is importable before the wheel goes in.
    assert run([python, "-c", "import mlplat.components"], cwd=workdir, env=env).returncode != 0
    extra = [arg for path in requirements for arg in ("-r", team / path.relative_to(EXAMPLE))]
    succeeded(
        run([python, "-m", "pip", "install", "--disable-pip-version-check", built.wheel, *extra], cwd=workdir, env=env)
    )
    return Installed(built, venv, python, env, workdir, team)


@pytest.fixture(scope="module")
def installed(built: Built) -> Installed:
    """What the example's README tells a team to do: the wheel and the program's own requirements, no extras."""
    return new_install(built, "team", EXAMPLE / "requirements.txt")


@pytest.fixture(scope="module")
def bare_install(built: Built) -> Installed:
    """The wheel alone, no extra, in its own clean virtualenv: what the images hold besides their torch extras."""
    return new_install(built, "image")


# -- the distributions -------------------------------------------------------------------------------------------


def test_the_wheel_ships_every_package_module_and_data_file(built: Built) -> None:
    names = set(zipfile.ZipFile(built.wheel).namelist())
    missing = sorted((set(shipped_files(built.source).values()) | set(REQUIRED_IN_WHEEL)) - names)
    assert not missing, f"not in {built.wheel.name}: {missing}"
    pyproject = tomllib.loads((built.source / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]:
        assert any(n.startswith(package.replace(".", "/") + "/") for n in names), f"package {package} is empty"
    # Nothing else: no top-level `components` (or tests) to collide with a team's own, and `mlplat` itself stays an
    # implicit namespace package.
    dist_info = f"mlplat-{built.version}.dist-info/"
    strays = sorted(n for n in names if not n.startswith(("mlplat/", dist_info)))
    assert not strays, f"files outside mlplat/: {strays}"
    assert "mlplat/__init__.py" not in names


def test_the_wheel_metadata_keeps_torch_in_the_extras_and_declares_the_cli(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        metadata = email.parser.Parser().parsestr(wheel.read(f"mlplat-{built.version}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"mlplat-{built.version}.dist-info/entry_points.txt").decode()
    requires = metadata.get_all("Requires-Dist") or []
    # The Pulumi SDKs are the infra extra's only: the serving and training images install neither.
    sdks = {re.split(r"[<>=;]", r)[0] for r in requires if r.startswith("pulumi") and r.endswith('extra == "infra"')}
    assert sdks == {"pulumi", "pulumi-aws", "pulumi-eks", "pulumi-kubernetes", "pulumi-docker", "pulumi-random"}
    unconditional = [r for r in requires if r.startswith("pulumi") and "extra ==" not in r]
    assert not unconditional, unconditional
    torch = [r for r in requires if r.startswith("torch")]
    assert torch and all("extra ==" in r for r in torch), torch
    assert set(metadata.get_all("Provides-Extra") or []) >= {"infra", "serving", "training"}
    assert "mlplat = mlplat.cli.app:main" in entry_points


def test_the_sdist_holds_the_sources_and_package_data(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md"} <= names
    expected = set(shipped_files(built.source))  # the wheel's files, at their source paths
    missing = sorted(expected - names)
    assert not missing, f"not in {built.sdist.name}: {missing}"


def test_the_install_instructions_name_the_wheel_the_build_makes(built: Built) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Installing mlplat in your own project", 1)[1].split("\n## ", 1)[0]
    for text in (section, (EXAMPLE / "README.md").read_text()):
        assert f"dist/{built.wheel.name}" in text
        assert "git+" in text


# -- the installed wheel -----------------------------------------------------------------------------------------

INSPECT = textwrap.dedent("""
    import importlib, importlib.util, json, pkgutil, sys
    from pathlib import Path
    import mlplat.components, mlplat.infra, mlplat.training
    failed = {}
    for package in (mlplat.components, mlplat.infra):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.rsplit(".", 1)[-1] == "__main__":  # runs the stack program
                continue
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                failed[module.name] = repr(exc)
    root = Path(mlplat.components.__file__).parent.parent
    print(json.dumps({
        "prefix": sys.prefix,
        "mlplat": str(root),
        "py_typed": sorted(p.parent.name for p in root.glob("*/py.typed")),
        "torch": importlib.util.find_spec("torch") is not None,
        "failed": failed,
    }))
""")


def test_the_wheel_installs_without_torch_and_imports_from_the_virtualenv(installed: Installed) -> None:
    succeeded(run([installed.python, "-m", "pip", "check"], cwd=installed.workdir, env=installed.env))
    facts = json.loads(succeeded(run([installed.python, "-c", INSPECT], cwd=installed.workdir, env=installed.env)))
    assert Path(facts["prefix"]) == installed.venv
    assert Path(facts["mlplat"]).is_relative_to(installed.venv / "lib"), facts["mlplat"]
    assert facts["py_typed"] == sorted(PACKAGE_FOLDERS)
    assert facts["torch"] is False, "torch belongs to the serving and training extras only"
    assert facts["failed"] == {}, "modules that do not import without the extras"


def test_the_team_example_renders_checks_and_prices_from_the_wheel(installed: Installed) -> None:
    def mlplat(*args: str) -> str:
        return succeeded(
            run([installed.mlplat, *args, "-C", installed.team], cwd=installed.workdir, env=installed.env, timeout=300)
        )

    render = json.loads(mlplat("synth", "dev", "--format", "json"))
    types = {r["type"] for r in render["resources"]}
    assert {"mlplat:storage:ArtifactStore", "mlplat:serving:ModelService", "kubernetes:apps/v1:Deployment"} <= types
    assert render["project"] == "fraud-team"
    assert "fraud-scorer" in mlplat("synth", "dev")  # the tree a team reads

    checked = mlplat("check", "dev")
    assert checked.startswith("dev (dev): all ") and "rules pass" in checked, checked

    # eu-west-1 is not in the price table (us-east-1 only): the estimate says so, names what it left out and
    # exits 0 instead of failing.
    priced = json.loads(mlplat("cost", "dev", "--format", "json"))
    assert priced["region"] == "eu-west-1"
    assert priced["complete"] is False
    unpriced = {line.split(":", 1)[0] for line in priced["unpriced"]}
    assert unpriced == {"fraud-artifacts", "fraud-artifacts-key"}, priced["unpriced"]
    assert all("eu-west-1" in line for line in priced["unpriced"])
    text = mlplat("cost", "dev")
    assert text.startswith("dev (dev, eu-west-1)") and "not priced" in text, text


def test_a_type_checker_resolves_mlplat_components_from_the_install(installed: Installed) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is missing: it is in the dev extra (scripts/setup.sh installs it)")
    project = installed.workdir / "typecheck"
    project.mkdir()
    (project / "mypy.ini").write_text(f"[mypy]\n\n[mypy-{','.join(HEAVY_SDKS)}]\nfollow_imports = skip\n")
    (project / "stack.py").write_text(
        textwrap.dedent("""
        from typing import assert_type

        import pulumi

        from mlplat.components.network import Network, NetworkArgs

        network = Network("ml", NetworkArgs(cidr_block="10.42.0.0/16", nat="single"))
        assert_type(network.vpc_id, pulumi.Output[str])
    """)
    )
    (project / "wrong.py").write_text(
        textwrap.dedent("""
        from mlplat.components.network import NetworkArgs

        NetworkArgs(cidr_block=16)
    """)
    )

    def mypy(python: Path, *files: str) -> subprocess.CompletedProcess[str]:
        # The repository's mypy, resolving imports as the team's virtualenv's interpreter sees them (PEP 561).
        return run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--config-file",
                "mypy.ini",
                "--cache-dir",
                project / ".mypy_cache",
                "--python-executable",
                python,
                *files,
            ],
            cwd=project,
            env=clean_environment(),
            timeout=300,
        )

    assert "Success" in succeeded(mypy(installed.python, "stack.py"))
    wrong = mypy(installed.python, "wrong.py")
    assert wrong.returncode == 1 and 'incompatible type "int"; expected "str"' in wrong.stdout, wrong.stdout
    # The control: an interpreter without the wheel finds no mlplat, so the success above came from the install.
    bare = installed.built.root / "bare-venv"
    succeeded(run([sys.executable, "-m", "venv", "--without-pip", bare], cwd=project, env=clean_environment()))
    missing = mypy(bare / "bin" / "python", "stack.py")
    assert missing.returncode == 1 and "import-not-found" in missing.stdout, missing.stdout


# -- the wheel without the infra extra (what the images install) ------------------------------------------------


def test_without_the_infra_extra_there_is_no_pulumi_and_serve_and_train_start(bare_install: Installed) -> None:
    listed = json.loads(
        succeeded(
            run(
                [bare_install.python, "-m", "pip", "list", "--format", "json"],
                cwd=bare_install.workdir,
                env=bare_install.env,
            )
        )
    )
    names = {entry["name"].lower() for entry in listed}
    assert "mlplat" in names
    assert not {n for n in names if n.startswith("pulumi")}, sorted(names)
    assert (
        run([bare_install.python, "-c", "import pulumi"], cwd=bare_install.workdir, env=bare_install.env).returncode
        != 0
    )

    for command, option in (("serve", "--model"), ("train", "--config"), ("promote", "--from")):
        shown = succeeded(run([bare_install.mlplat, command, "--help"], cwd=bare_install.workdir, env=bare_install.env))
        assert option in shown, shown


def test_without_the_infra_extra_the_iac_commands_name_it(bare_install: Installed) -> None:
    for args in (["synth", "dev", "-C", str(bare_install.team)], ["check", "dev", "-C", str(bare_install.team)]):
        refused = run([bare_install.mlplat, *args], cwd=bare_install.workdir, env=bare_install.env)
        message = " ".join(refused.stderr.split())
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"`mlplat {args[0]}` needs the Pulumi SDKs" in message, message
        assert "pip install 'mlplat[infra]'" in message and "Traceback" not in refused.stderr
