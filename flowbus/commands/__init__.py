"""CLI subcommands, one module per feature (registered in flowbus.cli.COMMAND_MODULES)."""
