"""mlplat.infra: this repository's stack program, its typed config, the offline engine and the CLI."""
