"""Reference statistics: what the trainer ships with a model and the server scores input drift against.

The trainer computes statistics on its training inputs (``mlplat.training.reference_stats``) and ships them in
the MLflow model directory as :data:`FILE_NAME`, at the top of the directory or under ``extra_files/`` (when
passed with ``mlflow.pytorch.log_model(..., extra_files=[...])``): the server looks in :data:`LOCATIONS`.

The file is a :class:`ReferenceStats`::

    {"schema_version": 1, "n_samples": 1797,
     "features": [{"name": "pixel_0", "bin_edges": [0.5, 3.0], "bin_fractions": [0.61, 0.2, 0.19]}, ...]}

``bin_edges`` are the distinct interior deciles of the feature in the training data, sorted; a value ``v``
falls in bin ``i`` = the number of edges ``<= v`` (so there are ``len(bin_edges) + 1`` bins, the outer two
open-ended), and ``bin_fractions[i]`` is the share of training rows in bin ``i``. A constant feature has one
edge. Only 2-D inputs ``[rows, features]`` are monitored.
"""

from __future__ import annotations

import itertools
import math
from typing import Final

from pydantic import BaseModel, Field, model_validator

SCHEMA_VERSION: Final = 1
FILE_NAME: Final = "reference_stats.json"
LOCATIONS: Final = (FILE_NAME, f"extra_files/{FILE_NAME}")
"""Where in a model directory the server looks for the file, in order."""


class FeatureReference(BaseModel):
    """One feature's reference distribution: bin edges from training deciles and the share of rows per bin."""

    name: str = Field(min_length=1)
    bin_edges: list[float] = Field(min_length=1, description="Sorted, distinct interior edges.")
    bin_fractions: list[float] = Field(min_length=2, description="Share of training rows per bin; sums to 1.")

    @model_validator(mode="after")
    def _check_bins(self) -> FeatureReference:
        edges, fractions = self.bin_edges, self.bin_fractions
        if len(fractions) != len(edges) + 1:
            raise ValueError(
                f"feature {self.name!r}: {len(edges)} bin_edges need {len(edges) + 1} bin_fractions, "
                f"got {len(fractions)}"
            )
        if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"feature {self.name!r}: bin_edges must be finite and strictly increasing")
        if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise ValueError(f"feature {self.name!r}: bin_fractions must be >= 0 and sum to 1 (sum {sum(fractions)})")
        return self


class ReferenceStats(BaseModel):
    """Reference statistics of a model's training inputs, one entry per input feature (column)."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    n_samples: int = Field(ge=1)
    features: list[FeatureReference] = Field(min_length=1)
