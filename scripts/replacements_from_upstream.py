#!/usr/bin/env python3
"""Regenerate the ``aws:`` entries of ``review/replacements.json`` from terraform-provider-aws's Go sources.

pulumi-aws bridges terraform-provider-aws, and its Pulumi schema does not say which inputs force a replacement
(the bridge emits no ``willReplaceOnChanges``): the knowledge is in the Terraform resources' Go code. This script
reads that code, offline, from a directory laid out like the upstream repository (``internal/service/...``), and
maps each ForceNew attribute to the wire (camelCase) name of the installed pulumi-aws SDK.

What counts as "forces replacement":

* SDKv2 schemas: an attribute with ``ForceNew: true``, at any depth (a nested block's attribute gives a dotted
  path, ``vpc_config.subnet_ids`` -> ``vpcConfig.subnetIds``);
* plugin-framework schemas: an attribute or block whose plan modifiers include ``RequiresReplace()`` (also
  ``RequiresReplaceIfConfigured()``, which replaces whenever the configured value changes);
* conditional replacement (``customdiff.ForceNewIf*``, ``d.ForceNew(...)``/``diff.ForceNew(...)`` in CustomizeDiff,
  ``RequiresReplaceIf(...)``) is listed apart, in ``replace_on_change_conditional``: the diff does not assume it.

Usage::

    python scripts/replacements_from_upstream.py SRC_DIR --tag v6.66.0            # print the regenerated entries
    python scripts/replacements_from_upstream.py SRC_DIR --tag v6.66.0 --write    # and update the JSON

Each ``aws:`` entry of the JSON names its Go file in ``upstream_file`` and the Terraform type in
``upstream_resource`` (optionally the commit it was read at in ``upstream_ref``); entries without them are left
alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JSON_PATH = Path(__file__).resolve().parent.parent / "review" / "replacements.json"
SOURCE_URL = "https://github.com/hashicorp/terraform-provider-aws/blob/{tag}/{path}"

# `names.AttrVPCID` and friends: upstream's attribute-name constants. A `names/attr_consts_gen.go` in the source
# directory is used when present; otherwise the constant's name is split into words, these acronyms kept whole.
ACRONYMS = (
    "IPv6",
    "IPv4",
    "ARNs",
    "IDs",
    "ARN",
    "CIDR",
    "DNS",
    "IAM",
    "KMS",
    "VPC",
    "URL",
    "URI",
    "SSL",
    "TLS",
    "AZ",
    "DB",
    "ID",
    "IP",
    "OIDC",
    "S3",
    "SSE",
    "SQS",
    "SNS",
    "EBS",
    "EC2",
    "EKS",
    "RDS",
)


# --- Go source scanning -------------------------------------------------------------------------------------------


def _skip_string_or_comment(text: str, i: int) -> int:
    """If ``text[i]`` opens a string, rune or comment, the index just past it; else ``i``."""
    ch = text[i]
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end < 0 else end + 2
    if ch == "`":
        end = text.find("`", i + 1)
        return len(text) if end < 0 else end + 1
    if ch in "\"'":
        j = i + 1
        while j < len(text) and text[j] != ch:
            j += 2 if text[j] == "\\" else 1
        return j + 1
    return i


def matching_brace(text: str, open_at: int) -> int:
    """The index of the ``}`` that closes the ``{`` at ``open_at`` (strings and comments skipped)."""
    depth = 0
    i = open_at
    while i < len(text):
        j = _skip_string_or_comment(text, i)
        if j != i:
            i = j
            continue
        if text[i] in "{([":
            depth += 1
        elif text[i] in "})]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced brace at offset {open_at}")


def split_top_level(body: str) -> list[str]:
    """``body`` split at its top-level commas (those outside any bracket, string or comment)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        j = _skip_string_or_comment(body, i)
        if j != i:
            i = j
            continue
        ch = body[i]
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return [p for p in (part.strip() for part in parts) if p and not p.startswith("//")]


def strip_comments(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        j = _skip_string_or_comment(text, i)
        if j != i:
            if not text.startswith(("//", "/*"), i):
                out.append(text[i:j])
            i = j
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


# A map literal that holds attributes: SDKv2 `map[string]*schema.Schema{`, framework `map[string]schema.Attribute{`
# and `map[string]schema.Block{`.
SCHEMA_MAP = re.compile(r"(?<!\)\s)map\[string\]\*?schema\.(?:Schema|Attribute|Block)\s*\{")  # not `func() map...{`


def attr_name_from_const(const: str, consts: dict[str, str]) -> str:
    if const in consts:
        return consts[const]
    words, rest = [], const.removeprefix("names.").removeprefix("Attr")
    while rest:
        acronym = next(
            (a for a in ACRONYMS if rest.startswith(a) and (len(rest) == len(a) or not rest[len(a)].islower())), None
        )
        if acronym:
            words.append(acronym.lower())
            rest = rest[len(acronym) :]
            continue
        m = re.match(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", rest)
        if not m:
            raise ValueError(f"cannot read the attribute constant {const!r}")
        words.append(m.group(0).lower())
        rest = rest[m.end() :]
    return "_".join(words)


def load_name_consts(src: Path) -> dict[str, str]:
    consts_file = src / "names" / "attr_consts_gen.go"
    if not consts_file.exists():
        return {}
    return {f"names.{k}": v for k, v in re.findall(r"\b(Attr\w+)\s*=\s*\"([^\"]+)\"", consts_file.read_text())}


@dataclass
class Extracted:
    force_new: list[str] = field(default_factory=list)  # dotted TF paths
    conditional: list[str] = field(default_factory=list)
    top_level: list[str] = field(default_factory=list)  # every top-level attribute the source defines


def _own_text(value: str) -> str:
    """``value`` without the attribute maps nested in it (their ForceNew belongs to the nested attributes)."""
    out, i = [], 0
    for m in SCHEMA_MAP.finditer(value):
        if m.start() < i:
            continue
        out.append(value[i : m.start()])
        i = matching_brace(value, m.end() - 1) + 1
    out.append(value[i:])
    return "".join(out)


def _nested_maps(value: str) -> list[str]:
    maps, i = [], 0
    for m in SCHEMA_MAP.finditer(value):
        if m.start() < i:
            continue
        close = matching_brace(value, m.end() - 1)
        maps.append(value[m.end() : close])
        i = close + 1
    return maps


def parse_schema_map(body: str, consts: dict[str, str], prefix: str, out: Extracted) -> None:
    for entry in split_top_level(body):
        key, sep, value = entry.partition(":")
        if not sep:
            continue
        key = key.strip()
        name = key.strip('"') if key.startswith('"') else attr_name_from_const(key, consts)
        path = f"{prefix}{name}"
        if not prefix:
            out.top_level.append(name)
        own = _own_text(value)
        if re.search(r"\bForceNew:\s*true\b", own) or re.search(r"\bRequiresReplace(IfConfigured)?\(\)", own):
            out.force_new.append(path)
        elif re.search(r"\bRequiresReplaceIf\w*\(", own):
            out.conditional.append(path)
        for nested in _nested_maps(value):
            parse_schema_map(nested, consts, f"{path}.", out)


ANNOTATION = re.compile(r"@(?:SDK|Framework)(?:Resource|DataSource)\(")


def resource_block(text: str, tf_type: str) -> str:
    """The source of the resource registered as ``tf_type`` (from its annotation to the next one).

    A file from before the annotations (2023) that annotates nothing is taken whole: such a file defines one resource.
    """
    m = re.search(rf'@(?:SDK|Framework)Resource\("{re.escape(tf_type)}"', text)
    if not m and not ANNOTATION.search(text):
        return text
    if not m:
        raise ValueError(f"no @SDKResource/@FrameworkResource annotation for {tf_type}")
    nxt = ANNOTATION.search(text[m.end() :])
    return text[m.start() : m.end() + nxt.start()] if nxt else text[m.start() :]


def extract(go_source: str, tf_type: str, consts: dict[str, str] | None = None) -> Extracted:
    """The ForceNew (and conditionally ForceNew) attribute paths of ``tf_type``, as Terraform names them."""
    # An annotation lives in a comment, so find the block in the raw source, then drop its comments.
    block = strip_comments(resource_block(go_source, tf_type))
    consts = consts or {}
    out = Extracted()
    framework = re.search(r"\bschema\.Schema\s*\{", block)
    sdk = re.search(r"(?<!\)\s)map\[string\]\*schema\.Schema\s*\{", block)
    if sdk and (not framework or sdk.start() < framework.start()):  # SDKv2: the first map is the resource's
        parse_schema_map(block[sdk.end() : matching_brace(block, sdk.end() - 1)], consts, "", out)
    elif framework:  # plugin framework: the Attributes and Blocks of the first schema.Schema{...}
        body = block[framework.end() : matching_brace(block, framework.end() - 1)]
        for top in _nested_maps(body):
            parse_schema_map(top, consts, "", out)
    else:
        raise ValueError(f"no schema found for {tf_type}")
    for m in re.finditer(r"customdiff\.ForceNewIf(?:Change)?\(\s*(\"[^\"]+\"|names\.Attr\w+)", block):
        arg = m.group(1)
        out.conditional.append(arg.strip('"') if arg.startswith('"') else attr_name_from_const(arg, consts))
    # `d.ForceNew("x")`, `diff.ForceNew(...)`, `rd.ForceNew("a.0.b")` in a CustomizeDiff; list indices dropped.
    for m in re.finditer(r"\b\w+\.ForceNew\(\s*(\"[^\"]+\"|names\.Attr\w+)", block):
        arg = m.group(1)
        name = arg.strip('"') if arg.startswith('"') else attr_name_from_const(arg, consts)
        out.conditional.append(re.sub(r"\.\d+(?=\.|$)", "", name))
    out.force_new = sorted(dict.fromkeys(out.force_new))
    out.conditional = sorted(p for p in dict.fromkeys(out.conditional) if p not in out.force_new)
    out.top_level = sorted(dict.fromkeys(out.top_level))
    return out


# --- The SDK: Terraform names to wire names -----------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def sdk_args_class(type_token: str) -> type:
    """The ``*Args`` input class of a Pulumi type token, e.g. ``aws:ec2/subnet:Subnet`` -> ``SubnetArgs``."""
    package, module, cls = type_token.split(":")
    mod_path, _, file_ = module.rpartition("/")
    root = {"aws": "pulumi_aws", "eks": "pulumi_eks", "random": "pulumi_random", "kubernetes": "pulumi_kubernetes"}[
        package
    ]
    # Always through the package, never a leaf module: the SDKs load their submodules lazily, and importing a leaf
    # (pulumi_aws.ecr.repository) first leaves its package (pulumi_aws.ecr) without its classes for later imports.
    if package == "kubernetes":  # pulumi_kubernetes.apps.v1.Deployment, pulumi_kubernetes.helm.v3.Release
        group = mod_path.split(".")[0] if mod_path else ""
        mod = importlib.import_module(".".join(p for p in (root, group.replace("-", "_"), file_) if p))
    elif module == "index" or mod_path == "index":
        mod = importlib.import_module(root)
    else:
        mod = importlib.import_module(f"{root}.{mod_path.replace('/', '.')}")
    # pulumi-aws names it `<Class>InitArgs` where `<Class>Args` is taken by a nested input type.
    found: type = getattr(mod, f"{cls}InitArgs", None) or getattr(mod, f"{cls}Args")
    return found


def sdk_input_names(type_token: str) -> dict[str, str]:
    """Python (snake) name -> wire (camel) name of every input of the type's resource."""
    from pulumi._types import input_type_py_to_pulumi_names

    return dict(input_type_py_to_pulumi_names(sdk_args_class(type_token)))


def wire_path(tf_path: str, inputs: dict[str, str]) -> str | None:
    """The wire path of a Terraform attribute path, or None when the SDK has no such input.

    pulumi-aws keeps Terraform's names but pluralises list attributes (``encryption_configuration`` ->
    ``encryptionConfigurations``); nested names are camel-cased the same way.
    """
    head, *rest = tf_path.split(".")
    top = next((inputs[c] for c in (head, head + "s", head + "es", head[:-1] + "ies") if c in inputs), None)
    if top is None:
        return None
    camel = [re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in rest]
    return ".".join([top, *camel])


def regenerate(type_token: str, entry: dict[str, Any], src: Path, tag: str, consts: dict[str, str]) -> dict[str, Any]:
    file_ = entry["upstream_file"]
    found = extract((src / file_).read_text(), entry["upstream_resource"], consts)
    inputs = sdk_input_names(type_token)
    paths = [(p, wire_path(p, inputs)) for p in found.force_new]
    conditional = [(p, wire_path(p, inputs)) for p in found.conditional]
    new = dict(entry)
    new["replace_on_change"] = sorted({w for _, w in paths if w})
    new["replace_on_change_conditional"] = sorted({w for _, w in conditional if w})
    unmapped = sorted(p for p, w in paths + conditional if w is None)
    if unmapped:
        new["not_inputs"] = unmapped  # ForceNew upstream, but no input of the SDK (computed-only, or renamed)
    else:
        new.pop("not_inputs", None)
    if not new["replace_on_change_conditional"]:
        new.pop("replace_on_change_conditional")
    # The stored upstream file may be older than the bridged one: SDK inputs it does not define (``region`` aside,
    # which the provider adds to every resource) were added upstream later, and may be ForceNew there.
    defined = {w for w in (wire_path(t, inputs) for t in found.top_level) if w}
    newer = sorted(set(inputs.values()) - defined - {"region"})
    if newer:
        new["source_lacks_sdk_inputs"] = newer
    else:
        new.pop("source_lacks_sdk_inputs", None)
    # An entry read at another ref than the run's tag (the file was only available there) says so in upstream_ref.
    new["source"] = SOURCE_URL.format(tag=entry.get("upstream_ref", tag), path=file_)
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "src", type=Path, help="a directory laid out like terraform-provider-aws (internal/service/...)"
    )
    parser.add_argument("--tag", required=True, help="the upstream tag the sources were read at, e.g. v6.66.0")
    parser.add_argument("--json", type=Path, default=JSON_PATH)
    parser.add_argument("--write", action="store_true", help="update the JSON in place")
    args = parser.parse_args(argv)

    data = json.loads(args.json.read_text())
    consts = load_name_consts(args.src)
    changed = 0
    for token, entry in sorted(data["types"].items()):
        if not token.startswith("aws:") or "upstream_file" not in entry:
            continue
        if not (args.src / entry["upstream_file"]).exists():
            print(f"skip {token}: {entry['upstream_file']} not in {args.src}", file=sys.stderr)
            continue
        new = regenerate(token, entry, args.src, args.tag, consts)
        before, after = set(entry["replace_on_change"]), set(new["replace_on_change"])
        if before != after or new != entry:
            changed += 1
        print(
            f"{token}: {sorted(after)}"
            + (f"  +{sorted(after - before)}" if after - before else "")
            + (f"  -{sorted(before - after)}" if before - after else "")
            + (
                f"  conditional {new['replace_on_change_conditional']}"
                if "replace_on_change_conditional" in new
                else ""
            )
            + (f"  not inputs {new['not_inputs']}" if "not_inputs" in new else "")
            + (
                f"  SOURCE OLDER THAN SDK, lacks {new['source_lacks_sdk_inputs']}"
                if "source_lacks_sdk_inputs" in new
                else ""
            )
        )
        data["types"][token] = new
    if args.write:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(
        f"{changed} entr{'y' if changed == 1 else 'ies'} {'updated' if args.write else 'would change'}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
