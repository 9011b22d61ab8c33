"""The `mlplat` command line.

Infrastructure commands (synth, ...) live here; the serving and training packages add their own
commands through their `register` hooks, which keep heavy imports (torch, mlflow) out of start-up.

This module is the console script of every install, the serving and training images included, which lack the
Pulumi SDKs (the ``infra`` extra): it imports neither them nor the IaC modules at module level, and each
infrastructure command checks for them first (:func:`require_infra`), so ``mlplat serve`` and ``mlplat train``
run without them and ``mlplat synth`` without them says which extra to install.
"""

from __future__ import annotations

import enum
import gc
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mlplat.serving.cli import register as register_serving
from mlplat.training.cli import register as register_training

if TYPE_CHECKING:
    from mlplat.infra.engine import Render
    from mlplat.policy.framework import PolicyConfig
    from mlplat.review.diff import RenderSource

# Parameters several commands share.
StackArgument = Annotated[str, typer.Argument(help="Stack name: reads Pulumi.<stack>.yaml")]
ProjectDirOption = Annotated[Path, typer.Option("--project-dir", "-C", help="Folder holding Pulumi.yaml")]

app = typer.Typer(
    name="mlplat",
    help="mlplat: an ML platform on AWS as Pulumi components, plus the training and serving code it runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

register_serving(app)
register_training(app)


def _print_version(value: bool) -> None:
    if value:
        import importlib.metadata

        typer.echo(f"mlplat {importlib.metadata.version('mlplat')}")
        raise typer.Exit()


class _Session:
    """Options given before the command (``mlplat --debug synth dev``) that the render commands share."""

    debug = False
    stack_references: dict[str, dict[str, object]] | None = None


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print mlplat's version and exit", is_eager=True, callback=_print_version
    ),
    debug: bool = typer.Option(False, "--debug", help="On a failing program, print its whole traceback"),
    stack_references: Path | None = typer.Option(
        None,
        "--stack-references",
        help="JSON or YAML file: stack name -> outputs, for the program's "
        "StackReferences (over offline:stackReferences in the stack config)",
    ),
) -> None:
    """mlplat: an ML platform on AWS as Pulumi components, plus the training and serving code it runs."""
    _Session.debug = debug
    _Session.stack_references = None
    if stack_references is not None:
        import yaml

        try:
            loaded = yaml.safe_load(stack_references.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise fail(f"--stack-references {stack_references}: {exc}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise fail(f"--stack-references {stack_references}: expected a mapping of stack name -> outputs")
        _Session.stack_references = loaded


class OutputFormat(enum.StrEnum):
    tree = "tree"
    json = "json"


def fail(message: str) -> typer.Exit:
    # Escaped: a message's own brackets (`mlplat[infra]`, `nodeGroups[cpu]`) are text, not rich markup.
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code=2)


INFRA_MODULES = ("pulumi", "pulumi_aws", "pulumi_eks", "pulumi_kubernetes", "pulumi_docker", "pulumi_random")
"""The import names of the ``infra`` extra's distributions (pyproject.toml)."""
INFRA_EXTRA_HINT = "pip install 'mlplat[infra]'"


def missing_infra_message(command: str, missing: list[str]) -> str:
    """What to tell a user whose install lacks the ``infra`` extra."""
    return (
        f"`mlplat {command}` needs the Pulumi SDKs, which this install lacks ({', '.join(missing)}); they are "
        f"mlplat's infra extra: {INFRA_EXTRA_HINT} (the serving and training images install only "
        "`mlplat serve` / `mlplat train` and leave them out)"
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses the name outright (an import hook) means "not here" too
        return False


def require_infra(command: str) -> None:
    """Fail with the install command when the ``infra`` extra is missing (checked by spec, nothing imported)."""
    missing = [name for name in INFRA_MODULES if not _installed(name)]
    if missing:
        raise fail(missing_infra_message(command, missing))


@app.command()
def synth(
    stack: StackArgument,
    output_format: OutputFormat = typer.Option(OutputFormat.tree, "--format", "-f", help="tree or json"),
    project_dir: ProjectDirOption = Path("."),
) -> None:
    """Render a stack offline (no cloud credentials) and print its resources."""
    require_infra("synth")
    from mlplat.infra.engine import collector_paused
    from mlplat.infra.synth import print_tree

    with collector_paused():  # the imports before the render too, and the output after it
        result = _render(stack, project_dir)
        if output_format is OutputFormat.json:
            typer.echo(result.dumps())
        else:
            print_tree(result, Console())


class ReportFormat(enum.StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _render(stack: str, project_dir: Path) -> Render:
    """Render ``stack`` offline, turning every expected failure into ``fail()``."""
    from mlplat.infra.config import ConfigError
    from mlplat.infra.engine import ProgramError
    from mlplat.infra.stacks import StackNotFound
    from mlplat.infra.synth import render_stack

    logging.getLogger("pulumi").setLevel(logging.ERROR)
    try:
        return render_stack(stack, project_dir.resolve(), _Session.stack_references)
    except (StackNotFound, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    except ProgramError as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise fail(f"stack {stack!r}: {exc.__cause__}") from None
        if _Session.debug and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        raise fail(str(exc) + ("" if _Session.debug else "\n(mlplat --debug ... prints the whole traceback)")) from None


def _policy_of(stack: str, project_dir: Path) -> PolicyConfig | None:
    """The stack's ``mlplat:policy`` config (required tags, strict environments), or None for mlplat's own."""
    import json

    from mlplat.infra.stacks import load_stack
    from mlplat.policy.framework import PolicyConfig

    raw = load_stack(project_dir.resolve(), stack).config.get("mlplat:policy")
    if not raw:
        return None
    try:
        return PolicyConfig.from_config(json.loads(raw))
    except ValueError as exc:
        raise fail(f"stack {stack!r}: {exc}") from None


def _render_document(stack: str, project_dir: Path) -> dict[str, object]:
    """Render ``stack`` offline and return its JSON form."""
    from mlplat.infra.engine import collector_paused

    with collector_paused():
        return _render(stack, project_dir).to_json()


def _load_render_file(path: Path) -> dict[str, object]:
    """A saved render (``mlplat synth STACK -f json``), checked for the shape the commands need."""
    import json

    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise fail(f"cannot read render {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"{path} is not JSON ({exc}); write one with `mlplat synth STACK --format json`") from None
    if not isinstance(document, dict) or not isinstance(document.get("resources"), list):
        raise fail(
            f"{path} is not a render: expected an object with a 'resources' list, as written by "
            "`mlplat synth STACK --format json`"
        )
    for index, record in enumerate(document["resources"]):
        if not isinstance(record, dict) or not {"urn", "type", "name"} <= record.keys():
            raise fail(f"{path}: resources[{index}] lacks urn, type or name")
    return document


class CheckFormat(enum.StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    github = "github"


@app.command()
def check(
    stack: StackArgument,
    output_format: CheckFormat = typer.Option(
        CheckFormat.text, "--format", "-f", help="text, json, markdown or github (workflow annotations)"
    ),
    project_dir: ProjectDirOption = Path("."),
    render_file: Path | None = typer.Option(None, "--render", help="Check this saved JSON render instead"),
    environment: str | None = typer.Option(
        None, "--environment", "-e", help="Enforce this environment's levels (default: the stack's own)"
    ),
) -> None:
    """Run mlplat's policy and contract rules over a stack rendered offline; exit 1 on a mandatory violation.

    ``--render FILE`` checks a saved render (``mlplat synth STACK --format json``), e.g. one edited by hand.
    """
    require_infra("check")
    import json

    from mlplat.infra.config import ENVIRONMENTS
    from mlplat.policy.check import check_render, environment_of, has_mandatory, to_github, to_markdown, to_text

    document = _load_render_file(render_file) if render_file else _render_document(stack, project_dir)
    policy = None if render_file else _policy_of(stack, project_dir)
    strict = policy.strict_environments if policy else ()
    if environment is not None and environment not in (*ENVIRONMENTS, *strict):
        raise fail(
            f"--environment {environment!r} is not an environment; allowed: "
            f"{', '.join(dict.fromkeys((*ENVIRONMENTS, *strict)))}"
        )
    env = environment or environment_of(document)
    findings = check_render(document, env, policy)
    if output_format is CheckFormat.json:
        typer.echo(
            json.dumps({"stack": stack, "environment": env, "findings": [f.to_json() for f in findings]}, indent=2)
        )
    elif output_format is CheckFormat.markdown:
        typer.echo(to_markdown(findings, stack, env), nl=False)
    elif output_format is CheckFormat.github:
        typer.echo(
            to_github(findings, stack, env, str(render_file) if render_file else f"Pulumi.{stack}.yaml"), nl=False
        )
    else:
        typer.echo(to_text(findings, stack, env), nl=False)
    if has_mandatory(findings):
        raise typer.Exit(code=1)


class DiffFormat(enum.StrEnum):
    markdown = "markdown"
    json = "json"


@app.command()
def cost(
    stack: StackArgument,
    output_format: ReportFormat = typer.Option(ReportFormat.text, "--format", "-f", help="text, json or markdown"),
    project_dir: ProjectDirOption = Path("."),
    render_file: Path | None = typer.Option(None, "--render", help="Price this saved JSON render instead"),
) -> None:
    """Estimate a stack's monthly AWS bill (idle and peak) from the dated price table."""
    require_infra("cost")
    from mlplat.review.cost import dumps, estimate_or_unpriced, to_markdown, to_text

    document = _load_render_file(render_file) if render_file else _render_document(stack, project_dir)
    # A region or environment the price table lacks names every priced resource as unpriced (the total is then
    # marked incomplete), rather than dropping the stack's estimate.
    result = estimate_or_unpriced(document)
    if result is None:
        raise fail(f"stack {stack!r}: the render holds no resources, so there is nothing to price")
    if output_format is ReportFormat.json:
        typer.echo(dumps(result))
    elif output_format is ReportFormat.markdown:
        typer.echo(to_markdown(result), nl=False)
    else:
        typer.echo(to_text(result), nl=False)


EXIT_BLOCKED = 3
"""``mlplat diff``'s exit code when the change holds something ``pulumi up`` (or AWS) would refuse."""
_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def _progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    typer.echo(message, err=True)


@dataclass
class _DiffProject:
    """The project ``mlplat diff`` compares, and the git repository holding it (looked up once, when first needed:
    two render files need no repository)."""

    path: Path
    subdir: str = "."
    """The project's folder inside the repository, as git names it at a ref."""
    _repo: Path | None = field(default=None, init=False)

    def repo(self) -> Path:
        from mlplat.review import diff as diffing

        if self._repo is None:
            try:
                self._repo = diffing.repo_root(self.path)
            except diffing.RefRenderError as exc:
                raise fail(f"{self.path} is not in a git repository ({exc}); pass two JSON renders instead") from None
        return self._repo


@dataclass(frozen=True)
class _DiffSide:
    """One side of ``mlplat diff``: as given, how it is read (``tree``, ``file`` or ``ref``), and its source."""

    spec: str | None
    how: str
    source: RenderSource


def _diff_side(project: _DiffProject, spec: str | None, side: str) -> _DiffSide:
    """Read ``spec`` as the working tree (None), else a render file, else a git ref."""
    from mlplat.review import diff as diffing

    if spec is None:
        return _DiffSide(spec, "tree", diffing.describe_tree(project.path, side))
    if Path(spec).is_file():
        return _DiffSide(spec, "file", diffing.describe_file(Path(spec), side))
    try:
        return _DiffSide(spec, "ref", diffing.describe_ref(project.repo(), spec, side))
    except diffing.RefRenderError as exc:
        raise fail(f"{spec!r} is neither a render file nor a usable git ref: {exc}") from None


def _stacks_at(project: _DiffProject, side: _DiffSide) -> set[str] | None:
    """The stacks a side has a ``Pulumi.<stack>.yaml`` for; None for a render file (one stack, named inside it)."""
    from mlplat.infra.stacks import available_stacks
    from mlplat.review import diff as diffing

    if side.how == "tree":
        return set(available_stacks(project.path))
    if side.how == "ref" and side.spec is not None:
        folder = "" if project.subdir == "." else project.subdir
        listing = diffing._git(project.repo(), "ls-tree", "--name-only", side.spec + ":" + folder)
        return {
            n[len("Pulumi.") : -len(".yaml")]
            for n in listing.decode().split()
            if n.startswith("Pulumi.") and n.endswith(".yaml") and n.count(".") == 2
        }
    return None


def _stacks_to_compare(project: _DiffProject, sides: tuple[_DiffSide, _DiffSide], chosen: list[str]) -> list[str]:
    """The ``--stack`` names, checked against both sides; by default a render file's stack, else every stack."""
    stacks = chosen
    files = [s.spec for s in sides if s.spec is not None and Path(s.spec).is_file()]
    if files and not stacks:
        stacks = [str(_load_render_file(Path(files[0])).get("stack", "?"))]
    known = [k for k in (_stacks_at(project, side) for side in sides) if k is not None]
    everywhere: set[str] = set().union(*known) if known else set()
    if not stacks:
        stacks = sorted(everywhere)
    unknown = [s for s in stacks if known and s not in everywhere]
    if unknown:
        raise fail(
            f"unknown stack{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: no "
            f"Pulumi.<stack>.yaml on either side; stacks: {', '.join(sorted(everywhere)) or 'none'}"
        )
    if not stacks:
        raise fail(f"no stacks to compare: no Pulumi.<stack>.yaml in {project.path}; pass --stack")
    return stacks


def _render_side(project: _DiffProject, side: _DiffSide, stack: str) -> dict[str, object]:
    """One side's render of ``stack``; a stack that side lacks renders as empty (the change adds or deletes it)."""
    import time

    from mlplat.infra.stacks import available_stacks
    from mlplat.review import diff as diffing

    label = "the working tree" if side.how == "tree" else side.spec
    started = time.monotonic()
    _progress(f"rendering {stack} from {label} ...")
    try:
        if side.how == "file":
            return _load_render_file(Path(str(side.spec)))
        if side.how == "tree":
            if stack not in available_stacks(project.path):
                return {"stack": stack, "resources": []}  # the change deletes this stack
            return diffing.render_tree(project.path, stack)
        return diffing.render_ref(project.repo(), str(side.spec), stack, project.subdir)
    except diffing.StackMissingAtRef:
        return {"stack": stack, "resources": []}  # the change adds this stack
    finally:
        _progress(f"rendered {stack} from {label} in {time.monotonic() - started:.1f} s")


def _render_sides(
    project: _DiffProject, sides: tuple[_DiffSide, _DiffSide], stacks: list[str]
) -> list[tuple[dict[str, object], dict[str, object]]]:
    """``(base, head)`` renders of each stack, rendered in parallel (a render from code runs in a subprocess)."""
    from concurrent.futures import ThreadPoolExecutor

    from mlplat.review import diff as diffing

    jobs = [(stack, side) for stack in stacks for side in sides]
    try:
        with ThreadPoolExecutor(max_workers=min(4, len(jobs))) as pool:
            futures = [pool.submit(_render_side, project, side, stack) for stack, side in jobs]
            documents = [f.result() for f in futures]
    except diffing.RefRenderError as exc:
        raise fail(str(exc)) from None
    return list(zip(documents[::2], documents[1::2], strict=True))


@app.command()
def diff(
    base: str = typer.Argument(..., help="A git ref (e.g. origin/main), or a JSON render file"),
    head: str | None = typer.Argument(
        None, help="A JSON render file or git ref; default: the working tree, rendered with the working tree's code"
    ),
    stacks: list[str] = typer.Option(
        [],
        "--stack",
        "-s",
        help="Stack to compare (repeat for more; default: every stack); an unknown name is an error",
    ),
    output_format: DiffFormat = typer.Option(DiffFormat.markdown, "--format", "-f", help="markdown or json"),
    project_dir: ProjectDirOption = Path("."),
    with_check: bool = typer.Option(
        False,
        "--check",
        help="Append the policy check of the head render (a flag: it takes no value); exit 1 on a mandatory violation",
    ),
) -> None:
    """Compare two renders (git refs or JSON files): added, removed, changed and replaced resources, cost delta.

    Exit codes: 0 done; 1 a mandatory policy violation (with --check); 2 a usage or render error; 3 the change
    deletes or replaces something `pulumi up` (or AWS) would refuse. Progress goes to stderr.
    """
    require_infra("diff")
    import json

    from mlplat.review.report import ChangeReport

    project = _DiffProject(project_dir.resolve())
    if head is not None and head.lower() in _BOOLEAN_WORDS and not Path(head).is_file():
        raise fail(
            f"{head!r} given as the head side: --check is a flag and takes no value (write `--check`, and "
            "leave the head out to compare with the working tree)"
        )
    sides = (_diff_side(project, base, "base"), _diff_side(project, head, "head"))
    if any(side.how == "ref" for side in sides):
        project.subdir = str(project.path.relative_to(project.repo()))
    stacks = _stacks_to_compare(project, sides, stacks)
    report = ChangeReport((sides[0].source, sides[1].source), with_check)
    for stack, (old, new) in zip(stacks, _render_sides(project, sides, stacks), strict=True):
        report.add(stack, old, new)
    if output_format is DiffFormat.json:
        typer.echo(json.dumps({"base": base, "head": head or "working tree", "stacks": report.stacks}, indent=2))
    else:
        typer.echo("\n".join(report.sections), nl=False)
    if report.blocked:
        raise typer.Exit(code=EXIT_BLOCKED)
    if report.mandatory:
        raise typer.Exit(code=1)


@app.command()
def runner(stack: StackArgument, project_dir: ProjectDirOption = Path(".")) -> None:
    """Print the runs-on labels (JSON) of the runner that deploys a stack (``mlplat:deploy.runner``)."""
    require_infra("runner")
    import json

    from mlplat.infra.config import ConfigError, load
    from mlplat.infra.stacks import StackNotFound, load_stack

    try:
        files = load_stack(project_dir.resolve(), stack)
        cfg = load({k: v for k, v in files.config.items() if k.startswith("mlplat:") or k == "aws:region"})
    except (StackNotFound, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    except ConfigError as exc:
        raise fail(f"stack {stack!r}: {exc}") from None
    typer.echo(json.dumps(cfg.deploy.labels(cfg.environment)))


@app.command()
def images(stack: StackArgument, project_dir: ProjectDirOption = Path(".")) -> None:
    """Print (JSON) the images CI builds and pushes for a stack, and their tag.

    Read from the offline render: every workload image in the stack's own repositories at the resolved tag
    (MLPLAT_IMAGE_TAG, registry.imageTag or the commit checked out), with its Dockerfile and build args:
    ``{"tag": ..., "images": [{"repository", "name", "dockerfile", "tag", "buildArgs", "ref"}, ...]}``.
    """
    require_infra("images")
    import json

    from mlplat.infra.config import ConfigError, load
    from mlplat.infra.images import images_to_push, needs_tag, resolve_image_tag
    from mlplat.infra.stacks import StackNotFound, load_stack

    try:
        files = load_stack(project_dir.resolve(), stack)
        cfg = load({k: v for k, v in files.config.items() if k.startswith("mlplat:") or k == "aws:region"})
        registry = cfg.registry
        tag = resolve_image_tag(registry) if needs_tag(registry) else None
    except (StackNotFound, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    except ConfigError as exc:
        raise fail(f"stack {stack!r}: {exc}") from None
    pushed = [] if tag is None else images_to_push(_render_document(stack, project_dir), tag)
    typer.echo(json.dumps({"stack": stack, "tag": tag, "images": [i.to_json() for i in pushed]}))


@app.command()
def demo(
    production_topology: bool = typer.Option(
        False, "--production-topology", help="Back MLflow with PostgreSQL and an S3 endpoint (moto) instead of sqlite"
    ),
    requests: int = typer.Option(200, "--requests", min=1, max=10000, help="Single-row requests for the latency"),
    state_dir: Path = typer.Option(Path(".mlplat/demo"), "--state-dir", help="Where the demo keeps MLflow's data"),
    project_dir: ProjectDirOption = Path("."),
) -> None:
    """The platform on this machine: MLflow, training, the gate, registration, serving; then the offline preview."""
    require_infra("demo")
    from mlplat.demo.platform import run_demo
    from mlplat.demo.services import ServiceError

    logging.getLogger("pulumi").setLevel(logging.ERROR)
    try:
        run_demo(
            project_dir.resolve(), state=state_dir.resolve(), production_topology=production_topology, requests=requests
        )
    except ServiceError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: every process the demo started has been stopped")
        raise typer.Exit(code=130) from None


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # The process is about to exit: move every live object to the permanent generation, so the
        # interpreter's shutdown collections skip them. After a render they include the provider SDKs'
        # ~600k objects, which those collections would otherwise walk for about a second.
        gc.freeze()


if __name__ == "__main__":
    main()
