"""What the serving and training images install, with and without the Pulumi SDKs in mlplat's base dependencies.

The images run ``pip install .[serving]`` / ``.[training]`` (after the pinned CPU torch). This resolves those
dependency sets from pyproject.toml through the distributions installed in this virtualenv (the same versions
the images get), then sums each distribution's installed files (its RECORD: modules, compiled .pyc, shared
libraries, data). "before" adds the ``infra`` extra to the base dependencies, as they were before the extra
existed; "after" is the set each image installs now.

Run: ``.venv/bin/python -m benchmarks.image_contents``; writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.report import machine_description, write_section

ROOT = Path(__file__).resolve().parent.parent


def closure(requirements: Iterable[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the requirements pull in (extras and environment markers honoured)."""
    found: dict[str, metadata.Distribution] = {}
    pending = [(Requirement(r), "") for r in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        dist = found.get(name)
        if dist is None:
            try:
                dist = found[name] = metadata.distribution(requirement.name)
            except metadata.PackageNotFoundError:
                raise SystemExit(f"{requirement.name} is not installed here: run ./scripts/setup.sh") from None
            pending.extend((Requirement(r), "") for r in dist.requires or [])
        for wanted in requirement.extras:  # an extra's requirements carry `extra == "<name>"` markers
            pending.extend((Requirement(r), wanted) for r in dist.requires or [] if "extra ==" in r)
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    """The size of the files a distribution installed (its RECORD)."""
    total = 0
    for file in dist.files or []:
        path = Path(str(file.locate()))
        if path.is_file():
            total += path.stat().st_size
    return total


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f}" if n >= 10e6 else f"{n / 1e6:.1f}"


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base, extras = project["dependencies"], project["optional-dependencies"]
    sizes: dict[str, int] = {}

    def size(dists: dict[str, metadata.Distribution]) -> int:
        for name, dist in dists.items():
            if name not in sizes:
                sizes[name] = installed_bytes(dist)
        return sum(sizes[name] for name in dists)

    infra = closure(extras["infra"])
    rows = []
    for image in ("serving", "training"):
        before = closure([*base, *extras["infra"], *extras[image]])
        after = closure([*base, *extras[image]])
        assert not any(name.startswith("pulumi") for name in after), sorted(after)
        gone = sorted(set(before) - set(after))
        rows.append(
            f"| `{image}` image (`.[{image}]`) | {len(before)} / {mb(size(before))} MB | "
            f"{len(after)} / {mb(size(after))} MB | {mb(size(before) - size(after))} MB: "
            f"{', '.join(gone)} |"
        )
    pulumi_only = {n: d for n, d in infra.items() if n.startswith("pulumi")}
    largest = sorted(pulumi_only, key=lambda n: -sizes.get(n, installed_bytes(pulumi_only[n])))
    torch = metadata.version("torch")
    write_section(
        "image-contents",
        f"""
## Image contents (Python packages)

Machine: {machine_description()}. Command: `.venv/bin/python -m benchmarks.image_contents`. Installed size of the
Python distributions each image's `pip install` brings in (files in each distribution's RECORD, `.pyc` included;
torch {torch} as the images pin it), resolved from `pyproject.toml` through this virtualenv's installed versions.
*Before*: the Pulumi SDKs in mlplat's base dependencies (as shipped until the `infra` extra); *after*: the SDKs
only in `mlplat[infra]`, which the images do not install. The base image and system packages are not counted
(see the container images section for whole-image sizes).

| image | before: distributions / size | after | removed |
|---|---:|---:|---|
{chr(10).join(rows)}

The Pulumi SDKs alone: {", ".join(f"{n} {mb(sizes.get(n) or installed_bytes(pulumi_only[n]))} MB" for n in largest)}.
`mlplat serve` and `mlplat train` import none of them (`tests/infra/test_cli_without_infra.py` runs both behind an
import hook that refuses them; `tests/packaging` runs the CLI from a virtualenv holding the wheel without extras).
""",
    )


if __name__ == "__main__":
    main()
