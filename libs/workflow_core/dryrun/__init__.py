"""Dry runs: a workflow walked for a sample form or event, rendering everything and doing
nothing. `walk.py` is the walk; `sample.py` what it starts from and the trigger's verdict."""

from workflow_core.dryrun.walk import dry_run

__all__ = ["dry_run"]
