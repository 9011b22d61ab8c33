"""Which input changes make a provider replace a resource: the data in ``replacements.json``, with sources.

The providers' Pulumi schemas do not publish this for the types mlplat uses (bridged providers emit no
``willReplaceOnChanges``; pulumi-kubernetes decides in code), so the table is built from the providers' sources:

* ``aws:`` entries that carry ``upstream_file``/``upstream_resource``/``upstream_ref`` are *derived*: regenerated
  by ``scripts/replacements_from_upstream.py`` from that terraform-provider-aws Go file (``ForceNew: true`` at any
  depth, framework ``RequiresReplace()``; conditional replacement goes to ``replace_on_change_conditional``, which
  the diff does not assume). To regenerate, save each entry's ``upstream_file`` (read at ``upstream_ref``) under a
  directory laid out like the upstream repository and run
  ``python scripts/replacements_from_upstream.py DIR --tag <upstream tag> --write``. An entry whose stored source
  is older than the installed SDK says so in ``source_lacks_sdk_inputs`` (inputs added upstream since, which may
  be ForceNew there): re-read a newer file for it when one can be had.
  Every ``aws:`` entry is derived; the stored upstream versions differ in age (some predate the ``@SDKResource``
  annotations, and such a file is read whole), so check ``source_lacks_sdk_inputs`` after a regeneration.
* the other entries (``eks:``, ``kubernetes:``, ``random:`` and the provider rows) are kept by hand, each citing its
  source. pulumi-kubernetes decides in code: a ConfigMap's ``data``/``binaryData`` and a Secret's
  ``data``/``stringData``/``type`` replace it because mlplat's provider sets neither ``enableConfigMapMutable`` nor
  ``enableSecretMutable``; setting either there means removing the entry here.

``pinned`` records the SDK versions the table was checked against and ``upstream`` the upstream versions; tests
compare them with the installed ones, so an SDK upgrade asks for a re-check (and a regeneration).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

DATA_FILE = "replacements.json"


@cache
def table() -> dict[str, Any]:
    """The packaged replace-on-change table."""
    data: dict[str, Any] = json.loads(resources.files("mlplat.review").joinpath(DATA_FILE).read_text())
    return data


def replace_paths(type_: str) -> frozenset[str]:
    """The input paths of ``type_`` (dotted, as the wire inputs nest them) that force a replacement."""
    data = table()
    if type_.startswith("pulumi:providers:"):
        return frozenset(data["provider_replace"].get(type_, []))
    own = frozenset((data["types"].get(type_) or {}).get("replace_on_change", []))
    if type_.startswith("kubernetes:") and type_ != "kubernetes:helm.sh/v3:Release":
        return own | frozenset(data["kubernetes_identity"])
    return own


def forces_replacement(type_: str, path: str) -> bool:
    """Whether changing ``path`` (e.g. ``vpcConfig.subnetIds[1]``) of a ``type_`` replaces the resource."""
    return any(path == p or path.startswith((p + ".", p + "[")) for p in replace_paths(type_))


def source(type_: str) -> str | None:
    """Where the entry for ``type_`` comes from."""
    entry = table()["types"].get(type_)
    return None if entry is None else str(entry["source"])
