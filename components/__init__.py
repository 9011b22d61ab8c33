"""mlplat.components: reusable Pulumi ComponentResources for an ML platform on AWS.

The public components and their args are importable from here (``from mlplat.components import ArtifactStore``),
loaded on first use so that importing one module does not import every provider SDK. Each component takes its
``*Args`` object or the same fields as keyword arguments, as Pulumi's SDKs do:
``ArtifactStore("models", ArtifactStoreArgs(protect=False))`` and ``ArtifactStore("models", protect=False)`` are the
same resource.

Only these names are the public API; each module's ``__all__`` lists what else it offers users (e.g.
``tracking_credentials_env``, ``service_monitor``), and the rest are helpers that may change without notice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "network": ("Network", "NetworkArgs", "NetworkSpec"),
    "cluster": ("Cluster", "ClusterArgs", "ClusterSpec", "ClusterWiring", "AddonVersions"),
    "node_groups": ("NodePoolArgs", "Taint"),
    "storage": ("ArtifactStore", "ArtifactStoreArgs", "ArtifactStoreSpec", "BucketGrant"),
    "registry": ("ContainerRegistry", "ContainerRegistryArgs", "ContainerRegistrySpec", "ImageBuild"),
    "tracking": ("Tracking", "TrackingArgs", "TrackingSpec", "DatabaseArgs", "TrackingAuth"),
    "model_service": ("ModelService", "ModelServiceArgs", "ModelServiceSpec", "Canary"),
    "training_job": ("TrainingJob", "TrainingJobArgs", "TrainingJobSpec"),
    "monitoring": ("Monitoring", "MonitoringArgs", "MonitoringSpec"),
    "alarms": ("PlatformAlarms", "PlatformAlarmsArgs", "PlatformAlarmsSpec", "AlarmThresholds"),
    "pipeline_access": ("PipelineAccess", "PipelineAccessArgs"),
    "bootstrap": ("GitHubAccess", "GitHubAccessArgs"),
    "platform": ("MlPlatform", "MlPlatformArgs"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
