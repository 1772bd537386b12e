"""The `edgequant` command group; the commands register themselves in ptq.py and training.py."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgequant")
def cli() -> None:
    """Make trained models small and fast for edge devices, with proof."""
