"""scripts/build-images.sh builds the images the stack deploys, each from its Dockerfile with the build context its
``<Dockerfile>.dockerignore`` allows (the classic builder reads no such file, so the script assembles the context)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from support.containers import DOCKER_HOST, IMAGES, docker

from mlplat.infra.images import DOCKERFILES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-images.sh"


def script_function(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run one function of scripts/build-images.sh with ``args``, against the project's Docker engine."""
    function = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", SCRIPT.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert function is not None, f"scripts/build-images.sh has no {name} function"
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail\nsay() {{ echo "$*" >&2; }}\n{function.group(0)}\n{name} "$@"', name, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DOCKER_HOST": DOCKER_HOST},
    )


def context(dockerfile: str) -> list[str]:
    """What the script's own ``context_paths`` sends for a Dockerfile: tar excludes, then paths."""
    done = script_function("context_paths", dockerfile + ".dockerignore")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def copied_sources(dockerfile: str) -> list[str]:
    """The build-context paths a Dockerfile's ``COPY`` instructions read (not ``COPY --from`` a stage)."""
    sources = []
    for line in (REPO / dockerfile).read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_the_script_builds_the_images_the_stack_deploys_from_their_dockerfiles() -> None:
    (listed,) = re.findall(r"^IMAGES=\(([^)]*)\)", SCRIPT.read_text(), flags=re.MULTILINE)
    assert sorted(listed.split()) == sorted(DOCKERFILES) == sorted(IMAGES)
    assert 'dockerfile="$image/Dockerfile"' in SCRIPT.read_text()
    assert all(path == f"{name}/Dockerfile" for name, path in DOCKERFILES.items())


def test_each_build_context_holds_what_its_dockerfile_copies_and_no_bytecode() -> None:
    for dockerfile in DOCKERFILES.values():
        sent = context(dockerfile)
        excludes = [s for s in sent if s.startswith("--exclude=")]
        paths = [s for s in sent if not s.startswith("--")]
        assert all((REPO / p).exists() for p in paths), paths
        for source in copied_sources(dockerfile):
            assert any(source == p or source.startswith(p + "/") for p in paths), f"{dockerfile}: {source} not sent"
        if any((REPO / p).is_dir() for p in paths):
            assert {"--exclude=__pycache__", "--exclude=*.pyc"} <= set(excludes), dockerfile


def test_a_rule_the_script_cannot_apply_stops_it(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "Dockerfile.dockerignore").write_text("*\n!src\nsrc/*.md\n")
    done = script_function("context_paths", "x/Dockerfile.dockerignore", cwd=tmp_path)
    assert done.returncode != 0 and "unsupported rule 'src/*.md'" in done.stderr


def test_every_build_stage_carries_the_label_the_script_prunes_by() -> None:
    for dockerfile in DOCKERFILES.values():
        lines = (REPO / dockerfile).read_text().splitlines()
        stages = [i for i, line in enumerate(lines) if line.startswith("FROM ") and not line.endswith(" AS runtime")]
        assert stages, f"{dockerfile} has no build stage"
        for start in stages:
            following = next(line for line in lines[start + 1 :] if line and not line.startswith("#"))
            assert following == "LABEL mlplat.stage=build", (
                f"{dockerfile}: {lines[start]!r} is followed by {following!r}"
            )


def test_the_build_stages_an_earlier_run_left_are_removed_and_this_runs_kept(
    engine_and_images: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")  # the classic builder, as the script uses

    def untagged_stages() -> set[str]:
        listed = docker("images", "--quiet", "--filter", "dangling=true", "--filter", "label=mlplat.stage=build")
        return set(listed.stdout.split())

    def build(labels: str) -> str:
        """An untagged image, as the classic builder leaves a build stage's last one; its short id."""
        done = docker("build", "--quiet", "-", input_text=f"FROM mlplat-base:bookworm\nLABEL {labels}\n")
        return done.stdout.strip().removeprefix("sha256:")[:12]

    before = untagged_stages()  # this machine's own builds' stages: the run below must keep them
    run = uuid.uuid4().hex
    earlier = build(f"mlplat.stage=build mlplat.test={run}-earlier")
    current = build(f"mlplat.stage=build mlplat.test={run}-current")
    foreign = build(f"mlplat.test={run}-foreign")  # untagged too, but no stage of ours
    try:
        assert {earlier, current} <= untagged_stages()
        log = tmp_path / "build-serving.log"
        log.write_text(
            "".join(f"Step 1/2 : FROM x AS build\n ---> {i}\n ---> Running in 0123456789ab\n" for i in before)
        )
        (tmp_path / "build-training.log").write_text(f"Step 2/2 : LABEL mlplat.stage=build\n ---> {current}\n")
        done = script_function("prune_stale_stages", str(log), str(tmp_path / "build-training.log"))
        assert done.returncode == 0, done.stderr
        assert docker("image", "inspect", earlier, check=False).returncode != 0, (
            "the earlier run's stage is still there"
        )
        assert untagged_stages() == before | {current}
        assert docker("image", "inspect", foreign, check=False).returncode == 0, "an image not ours was removed"
    finally:
        docker("rmi", "--force", earlier, current, foreign, check=False)
