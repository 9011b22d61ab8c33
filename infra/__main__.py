"""The Pulumi program for this repository's stacks: `pulumi up` runs this file."""
