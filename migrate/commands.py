"""Until `migrate plan`/`apply` move to migrate/cli/: where their --via/--checkout options come from."""

from migrate.cli.arguments import add_source_arguments

__all__ = ["add_source_arguments"]
