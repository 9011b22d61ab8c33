"""The Pulumi program for this repository's stacks: `pulumi up` runs this file."""

from mlplat.infra.program import main

main()
