"""The offline engine: render a Pulumi program under the mock runtime and record every resource.

This is mlplat's test harness and its credential-free preview. A program (this repository's stack, or a
team's own module or file) runs against :class:`RecordingMonitor`, a resource monitor that records what the
SDK sends on the wire (URN, type, parent, inputs, options) and answers with realistic computed outputs
from :mod:`mlplat.infra.mock_outputs`.

Why our own monitor rather than Pulumi's ``MockMonitor``: the stock monitor deserializes every input back
into Python objects, including resource references, which hangs or fails with "attached to a different
loop" when one resource is an input to two others. We record the wire form, turn resource references off
(the SDK then sends plain ids and URNs), and build the response ``Struct`` straight from JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import gc
import json
import logging
import runpy
import sysconfig
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from mlplat.infra.mock_outputs import MockOutputs

# Sentinels of Pulumi's wire format (sdk/go/common/resource/sig).
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
SIG_KEY = "4dabf18193072939515e22adb298388d"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
MASK = "[secret]"

log = logging.getLogger(__name__)


class ProgramError(Exception):
    """The stack program raised: carries the component (URN) that was being built when it failed."""


class OfflineUnsupported(Exception):
    """The program asked the offline engine for something it cannot answer (an invoke, a stack reference)."""


class DuplicateUrn(Exception):
    """Two resources with one URN: the Pulumi engine refuses the second, and so does the offline engine."""


STACK_REFERENCES_KEY = "offline:stackReferences"
"""Stack config key (a JSON object: stack name -> its outputs) that feeds ``pulumi.StackReference`` offline."""
STACK_REFERENCE = "pulumi:pulumi:StackReference"


@dataclass(frozen=True)
class ResourceRecord:
    """One resource as the engine saw it registered."""

    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    options: dict[str, Any]
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (callers may change it without touching the render)."""
        return copy.deepcopy(
            {
                "urn": self.urn,
                "type": self.type,
                "name": self.name,
                "parent": self.parent,
                "custom": self.custom,
                "inputs": self.inputs,
                "options": self.options,
            }
        )


@dataclass
class Render:
    """The result of rendering a stack: every resource, the stack outputs, and what was invoked."""

    project: str
    stack: str
    resources: list[ResourceRecord]
    outputs: dict[str, Any] = field(default_factory=dict)
    invokes: list[str] = field(default_factory=list)

    def by_type(self, type_: str) -> list[ResourceRecord]:
        """All resources of a type token, e.g. ``aws:ec2/natGateway:NatGateway``."""
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> ResourceRecord:
        """The single resource of a type (and name); raises if there are none or several."""
        found = [r for r in self.by_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} named {name!r}, found {[r.name for r in found]}")
        return found[0]

    def get(self, urn: str) -> ResourceRecord:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise LookupError(urn)

    def ancestors(self, record: ResourceRecord) -> list[ResourceRecord]:
        """The parent chain of a resource, nearest first, ending at the stack."""
        chain: list[ResourceRecord] = []
        parent = record.parent
        while parent:
            rec = self.get(parent)
            chain.append(rec)
            parent = rec.parent
        return chain

    def counts_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.resources:
            counts[r.type] = counts.get(r.type, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        """A stable, sorted form: two renders of the same program diff cleanly."""
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": [r.to_json() for r in sorted(self.resources, key=lambda r: r.urn)],
            "outputs": dict(sorted(self.outputs.items())),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)


def to_plain(wire: Any, *, mask_secrets: bool) -> Any:
    """Turn wire-format values into plain JSON: secrets masked (or unwrapped), references to their URN/id."""
    if isinstance(wire, list):
        return [to_plain(v, mask_secrets=mask_secrets) for v in wire]
    if isinstance(wire, float) and wire.is_integer():
        return int(wire)  # protobuf Struct carries every number as a double
    if not isinstance(wire, dict):
        return wire
    sig = wire.get(SIG_KEY)
    if sig == SECRET_SIG:
        return MASK if mask_secrets else to_plain(wire.get("value"), mask_secrets=False)
    if sig == RESOURCE_SIG:
        return wire.get("id") or wire.get("urn")
    if sig == OUTPUT_SIG:
        if wire.get("secret") and mask_secrets:
            return MASK
        return to_plain(wire.get("value"), mask_secrets=mask_secrets)
    return {k: to_plain(v, mask_secrets=mask_secrets) for k, v in sorted(wire.items())}


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    json_format.ParseDict(dict(value), s)
    return s


def _decode_provider_inputs(wire: dict[str, Any]) -> dict[str, Any]:
    # Providers receive their object-valued inputs JSON-encoded (e.g. defaultTags); decode for readability.
    decoded: dict[str, Any] = {}
    for key, value in wire.items():
        if isinstance(value, str) and value[:1] in "{[":
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        decoded[key] = value
    return decoded


def _provider_urn(ref: str) -> str | None:
    # The SDK sends provider references as "<urn>::<id>".
    return ref.rsplit("::", 1)[0] if ref else None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A resource monitor that records wire inputs and options, and answers from :class:`MockOutputs`."""

    def __init__(
        self,
        mocks: MockOutputs,
        stack_references: Mapping[str, Mapping[str, Any]] | None = None,
        config: Mapping[str, str] | None = None,
        secret_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(mocks)
        self.outputs_source = mocks
        self.stack_references = dict(stack_references or {})
        self.config = dict(config or {})
        self.secret_keys = set(secret_keys)
        self._default_providers: dict[str, str] = {}
        self.records: list[ResourceRecord] = []
        self.invoked: list[str] = []
        self._urns: set[str] = set()
        self._stack_transforms: list[Any] = []

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # As the Pulumi engine does: a child's qualified type is its parent's whole qualified type chain
        # (the root stack excluded) joined with "$" (Pulumi's stock mock keeps only the last link).
        if parent and "::pulumi:pulumi:Stack::" not in parent:
            type_ = parent.split("::")[2] + "$" + type_
        return "urn:pulumi:" + "::".join([pulumi.get_stack(), pulumi.get_project(), type_, name])

    def GetDeploymentInfo(self, request: Any) -> Any:
        # No resource references: the SDK then sends custom resources as ids and components as URNs,
        # so nothing has to be rehydrated into a Resource on our side.
        return resource_pb2.DeploymentInfo(
            supportedFeatures=[
                resource_pb2.RESOURCE_MONITOR_FEATURE_SECRETS,
                resource_pb2.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS,
                resource_pb2.RESOURCE_MONITOR_FEATURE_DELETED_WITH,
                resource_pb2.RESOURCE_MONITOR_FEATURE_TRANSFORMS,
            ]
        )

    def SupportsFeature(self, request: Any) -> Any:
        has = request.id in {"secrets", "aliasSpecs", "deletedWith", "transforms"}
        return type("SupportsFeatureResponse", (object,), {"hasSupport": has})

    def Invoke(self, request: Any) -> Any:
        self.invoked.append(request.tok)
        args = to_plain(json_format.MessageToDict(request.args), mask_secrets=False)
        result = self.outputs_source.invoke(request.tok, args)
        if result is None:
            raise OfflineUnsupported(
                f"the offline engine has no answer for the data source {request.tok!r} (args {sorted(args)}); "
                "look it up in the program's config instead, or add it to mlplat.infra.mock_outputs"
            )
        return resource_pb2.ResourceInvokeResponse(failures=None, **{"return": _struct(result)})

    def RegisterStackTransform(self, request: Any) -> Any:
        # pulumi.runtime.register_resource_transform: applies to every resource registered after it.
        self._stack_transforms.append(request)
        return empty_pb2.Empty()

    def _transform(self, request: Any) -> Any:
        """``request`` after its own transforms, then the stack's, as the Pulumi engine applies them."""
        callbacks = [*request.transforms, *self._stack_transforms]
        if not callbacks:
            return request
        for callback in callbacks:
            transform = resource_pb2.TransformRequest(
                type=request.type,
                name=request.name,
                custom=request.custom,
                parent=request.parent,
                properties=request.object,
                options=resource_pb2.TransformResourceOptions(
                    depends_on=list(request.dependencies),
                    protect=request.protect,
                    ignore_changes=list(request.ignoreChanges),
                    retain_on_delete=request.retainOnDelete,
                    delete_before_replace=request.deleteBeforeReplace,
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                ),
            )
            response = resource_pb2.TransformResponse.FromString(_call_back(callback, transform.SerializeToString()))
            changed = resource_pb2.RegisterResourceRequest()
            changed.CopyFrom(request)
            changed.object.CopyFrom(response.properties)
            if response.HasField("options"):
                options = response.options
                del changed.dependencies[:]
                changed.dependencies.extend(options.depends_on)
                changed.protect = options.protect
                del changed.ignoreChanges[:]
                changed.ignoreChanges.extend(options.ignore_changes)
                changed.retainOnDelete = options.retain_on_delete
                changed.deleteBeforeReplace = options.delete_before_replace
                del changed.additionalSecretOutputs[:]
                changed.additionalSecretOutputs.extend(options.additional_secret_outputs)
            request = changed
        return request

    def RegisterResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        if urn in self._urns:
            raise DuplicateUrn(f"Duplicate resource URN '{urn}'; try giving it a unique name")
        self._urns.add(urn)
        request = self._transform(request)
        if request.type == "pulumi:pulumi:Stack":
            self.records.append(ResourceRecord(urn, request.type, request.name, None, False, {}, {}))
            return resource_pb2.RegisterResourceResponse(urn=urn)
        wire = json_format.MessageToDict(request.object)
        if request.type.startswith("pulumi:providers:"):
            wire = _decode_provider_inputs(wire)
        masked = to_plain(wire, mask_secrets=True)
        plain = to_plain(wire, mask_secrets=False)
        options: dict[str, Any] = {
            "protect": bool(request.protect),
            "retain_on_delete": bool(request.retainOnDelete),
            "depends_on": sorted(request.dependencies),
            "provider": _provider_urn(request.provider),
            "ignore_changes": sorted(request.ignoreChanges),
            "delete_before_replace": bool(request.deleteBeforeReplace),
            "additional_secret_outputs": sorted(request.additionalSecretOutputs),
            "aliases": sorted(json_format.MessageToJson(a, sort_keys=True) for a in request.aliases),
        }
        if request.deletedWith:
            options["deleted_with"] = request.deletedWith
        # Which resources' outputs each input takes (the SDK tracks them): `mlplat diff` follows a replacement
        # into an input only through these, even where the input's value is masked as a secret.
        options["property_dependencies"] = {
            key: sorted(deps.urns) for key, deps in sorted(request.propertyDependencies.items()) if deps.urns
        }
        if request.custom and not request.provider and not request.type.startswith("pulumi:providers:"):
            options["provider"] = self._default_provider(request.type.split(":", 1)[0], request.version)
        resource_id: str | None = None
        state: dict[str, Any] = {}
        if request.custom:
            resource_id, computed = self.outputs_source.outputs(request.type, request.name, plain)
            # Inputs keep their wire form, so secret inputs come back as secret outputs.
            state = {**wire, **computed}
            if request.type.startswith("pulumi:providers:"):
                options["provider"] = None
        elif request.remote:
            # A remote (multi-language) component such as eks:index:Cluster: opaque under mocks,
            # so the mocks supply the outputs its dependants read.
            _, state = self.outputs_source.outputs(request.type, request.name, plain)
            state = {**wire, **state}
        self.records.append(
            ResourceRecord(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent or None,
                custom=bool(request.custom),
                inputs=masked,
                options=options,
                id=resource_id,
            )
        )
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id or "", object=_struct(state))

    def _default_provider(self, package: str, version: str) -> str:
        """The URN of the provider the Pulumi engine would make for ``package`` from the ``<package>:*`` config.

        A resource given no provider gets the package's default one, configured from the stack config (e.g.
        ``aws:region``, ``aws:defaultTags``); recording it lets cost and checks see that region and those tags.
        """
        name = "default" + (f"_{version.replace('.', '_').replace('-', '_')}" if version else "")
        urn = f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::pulumi:providers:{package}::{name}"
        if package not in self._default_providers:
            self._default_providers[package] = urn
            inputs = {}
            for key, value in sorted(self.config.items()):
                namespace, _, setting = key.partition(":")
                if namespace != package:
                    continue
                decoded: Any = value
                if isinstance(value, str) and value[:1] in "{[":
                    with contextlib.suppress(ValueError):
                        decoded = json.loads(value)
                inputs[setting] = MASK if key in self.secret_keys else decoded
            stack = next((r.urn for r in self.records if r.type == "pulumi:pulumi:Stack"), None)
            self.records.append(
                ResourceRecord(
                    urn,
                    f"pulumi:providers:{package}",
                    name,
                    stack,
                    True,
                    inputs,
                    {"provider": None, "depends_on": [], "protect": False},
                    id=f"{package}-default-provider",
                )
            )
        return self._default_providers[package]

    def ReadResource(self, request: Any) -> Any:
        # `Resource.get(...)` and StackReference read what exists instead of creating it: answered, not recorded
        # (the stack does not manage it, so it is neither priced, checked nor diffed).
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == STACK_REFERENCE:
            _, state = self._stack_reference(request.id)
        else:
            wire = json_format.MessageToDict(request.properties)
            _, computed = self.outputs_source.outputs(request.type, request.name, to_plain(wire, mask_secrets=False))
            state = {**wire, **computed, "id": request.id}
        return resource_pb2.ReadResourceResponse(urn=urn, properties=_struct(state))

    def _stack_reference(self, name: str) -> tuple[str, dict[str, Any]]:
        outputs = self.stack_references.get(name)
        if outputs is None:
            known = ", ".join(sorted(self.stack_references)) or "none"
            raise OfflineUnsupported(
                f"StackReference {name!r}: no outputs for it offline (given: {known}); put them in the stack config "
                f"as {STACK_REFERENCES_KEY}: {{{name!r}: {{output: value, ...}}}} or pass --stack-references FILE"
            )
        return name, {"name": name, "outputs": dict(outputs), "secretOutputNames": []}


def _call_back(callback: Any, payload: bytes) -> bytes:
    """Run one of the program's callbacks (a transform) on the program's event loop and return its answer.

    The SDK serves callbacks over gRPC for the real engine; offline, the monitor runs in the SDK's worker
    thread, so it calls the registered coroutine directly on the loop that owns it.
    """
    from pulumi.runtime._callbacks import _CallbackServicer

    for servicer in _CallbackServicer._servicers:
        if servicer._target == callback.target and callback.token in servicer._callbacks:
            coroutine: Any = servicer._callbacks[callback.token](payload)
            message: Any = asyncio.run_coroutine_threadsafe(coroutine, servicer._loop).result()
            return bytes(message.SerializeToString())
    raise OfflineUnsupported(f"callback {callback.token} at {callback.target} is not registered")


Program = Callable[[], None]


def program_from_path(path: str | Path) -> Program:
    """A program from a file, or a folder holding ``__main__.py`` (as Pulumi runs ``main:``)."""
    target = Path(path)
    if target.is_dir():
        target = target / "__main__.py"
    if not target.exists():
        raise FileNotFoundError(f"no Pulumi program at {target}")

    def run() -> None:
        runpy.run_path(str(target), run_name="__main__")

    return run


def program_from_module(module: str) -> Program:
    """A program from an importable module name, run as ``__main__`` (so re-rendering re-runs it)."""

    def run() -> None:
        runpy.run_module(module, run_name="__main__", alter_sys=False)

    return run


def _failing_component(error: BaseException) -> str:
    """The innermost component whose constructor was running when ``error`` was raised."""
    where = "the stack program"
    tb = error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, pulumi.ComponentResource):
            where = f"component {owner._name!r} ({type(owner).__name__})"
        tb = tb.tb_next
    return where


# Frames of the SDKs (site-packages), the standard library and this engine are not the program's.
_LIBRARY_PATHS = (str(Path(pulumi.__file__).parent.parent), sysconfig.get_paths()["stdlib"], __file__)


def _program_location(error: BaseException) -> str | None:
    """``file:line`` of the innermost frame of the program (or of mlplat's components), not of the SDKs."""
    location = None
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(_LIBRARY_PATHS) and not filename.startswith("<"):
            path = Path(filename)
            with contextlib.suppress(ValueError):
                path = path.relative_to(Path.cwd())
            location = f"{path}:{tb.tb_lineno}"
        tb = tb.tb_next
    return location


def _resolve(value: Any) -> tuple[Any, bool]:
    """Resolve an exported value to (plain value, is_secret)."""
    out = pulumi.Output.from_input(value)
    resolved = _sync_await(out.future())
    secret = bool(_sync_await(out.is_secret()))
    return resolved, secret


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (then restore it as it was).

    Importing the provider SDKs creates ~600k long-lived objects (classes, functions, typing aliases), and
    that allocation burst sets off full collections, each walking every object created so far: about a
    third of a whole ``mlplat synth`` process (docs/benchmarks.md). A render's own cyclic garbage is a
    few MB, collected once the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def render(
    program: Program,
    *,
    project: str,
    stack: str,
    config: Mapping[str, str] | None = None,
    secret_keys: list[str] | None = None,
    mocks: MockOutputs | None = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
) -> Render:
    """Run ``program`` under the mock runtime with ``config`` and return every resource it registered.

    ``pulumi.StackReference(name)`` reads ``stack_references[name]``, else the outputs given for it in the
    config key :data:`STACK_REFERENCES_KEY`. Each render runs in a fresh ``contextvars`` context, so renders are
    independent within one process, with the garbage collector paused (:func:`collector_paused`).
    """
    config = dict(config or {})
    references = {**_configured_references(config), **(stack_references or {})}
    with collector_paused():
        try:
            return contextvars.Context().run(
                _render_in_context, program, project, stack, config, list(secret_keys or []), mocks, references
            )
        except ProgramError:
            # A failed program drops Output coroutines it never awaited. Finalize them here, quietly: left to a
            # later collection, their "never awaited" warning can fire inside compile() and break the caller.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                gc.collect()
            raise
        finally:
            # Some of the SDK's Output tasks land in the process-wide settings' set rather than the render's
            # context; a failed render leaves failed ones there, which the next render would await and re-raise.
            if pulumi_settings.SETTINGS.outputs:
                pulumi_settings.SETTINGS.outputs.clear()


def _configured_references(config: Mapping[str, str]) -> dict[str, Mapping[str, Any]]:
    raw = config.get(STACK_REFERENCES_KEY)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ProgramError(f"{STACK_REFERENCES_KEY}: not a JSON object ({exc})") from exc
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ProgramError(f"{STACK_REFERENCES_KEY}: expected {{stack name: {{output: value}}}}, got {value!r}")
    return value


def _ensure_event_loop() -> None:
    """Give this thread a usable current event loop, which Pulumi's runtime schedules on.

    ``asyncio.run()`` (a caller's, or a library's) ends by unsetting the current loop, after which the
    runtime's first ``asyncio.Future()`` raises "There is no current event loop".
    """
    policy = asyncio.get_event_loop_policy()
    try:
        if not policy.get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    policy.set_event_loop(policy.new_event_loop())


def _render_in_context(
    program: Program,
    project: str,
    stack: str,
    config: dict[str, str],
    secret_keys: list[str],
    mocks: MockOutputs | None,
    stack_references: Mapping[str, Mapping[str, Any]],
) -> Render:
    _ensure_event_loop()
    source = mocks or MockOutputs(project=project, stack=stack, region=config.get("aws:region", "us-east-1"))
    monitor = RecordingMonitor(source, stack_references, config, secret_keys)
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(source, project=project, stack=stack, preview=False, monitor=monitor)
    root = pulumi_settings.get_root_resource()
    error: BaseException | None = None

    def run() -> None:
        program()

    try:
        _sync_await(run_pulumi_func(run))
    except BaseException as exc:
        error = exc
    if error is not None:
        where = _program_location(error)
        raise ProgramError(
            f"{type(error).__name__} in {_failing_component(error)}: {error}" + (f"\n  at {where}" if where else "")
        ) from error

    outputs: dict[str, Any] = {}
    stack_outputs: Mapping[str, Any] = getattr(root, "outputs", {}) or {}
    for key, value in stack_outputs.items():
        resolved, secret = _resolve(value)
        outputs[key] = MASK if secret else _jsonable(resolved)
    return Render(
        project=project,
        stack=stack,
        resources=monitor.records,
        outputs=outputs,
        invokes=sorted(set(monitor.invoked)),
    )
