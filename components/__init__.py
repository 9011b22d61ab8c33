"""mlplat.components: reusable Pulumi ComponentResources for an ML platform on AWS.

Each component takes its ``*Args`` object or the same fields as keyword arguments, as Pulumi's SDKs do:
``ArtifactStore("models", ArtifactStoreArgs(protect=False))`` and ``ArtifactStore("models", protect=False)`` are the
same resource.
"""
