"""The `mlplat` command line (:mod:`mlplat.cli.app`): the stack commands (synth, check, cost, diff, images, runner),
the local demo, and the trainer's and the server's own commands, registered from their packages."""
