"""scripts/build-images.sh builds the images the stack deploys, each from its Dockerfile with the build context its
``<Dockerfile>.dockerignore`` allows (the classic builder reads no such file, so the script assembles the context)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from support.containers import IMAGES

from mlplat.infra.images import DOCKERFILES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-images.sh"


def context(dockerfile: str) -> list[str]:
    """What the script's own ``context_paths`` sends for a Dockerfile: tar excludes, then paths."""
    function = re.search(r"^context_paths\(\) \{\n.*?^\}\n", SCRIPT.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert function is not None, "scripts/build-images.sh has no context_paths function"
    done = subprocess.run(
        [
            "bash",
            "-c",
            f'say() {{ echo "$*" >&2; }}\n{function.group(0)}\n'
            f"context_paths {shlex.quote(dockerfile + '.dockerignore')}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
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
    function = re.search(r"^context_paths\(\) \{\n.*?^\}\n", SCRIPT.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert function is not None
    done = subprocess.run(
        ["bash", "-c", f'say() {{ echo "$*" >&2; }}\n{function.group(0)}\ncontext_paths x/Dockerfile.dockerignore'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0 and "unsupported rule 'src/*.md'" in done.stderr
