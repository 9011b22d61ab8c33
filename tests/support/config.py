"""Stack config as a test writes it: sections in, Pulumi's string values out, and the problems `load` reports."""

from __future__ import annotations

import json

import pytest

from mlplat.infra.config import ConfigError, load

BASE = {"aws:region": "us-east-1"}


def config(env: str, **sections: object) -> dict[str, str]:
    """``mlplat:<section>`` keys JSON-encoded, as Pulumi hands object-valued config to a program."""
    return {**BASE, "mlplat:environment": env, **{f"mlplat:{k}": json.dumps(v) for k, v in sections.items()}}


def problems(env: str, **sections: object) -> list[str]:
    """The problems of a config that must fail to load."""
    with pytest.raises(ConfigError) as caught:
        load(config(env, **sections))
    return caught.value.problems
