"""mlplat.components: reusable Pulumi ComponentResources for an ML platform on AWS."""
