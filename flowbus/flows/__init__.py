"""Flow definitions: YAML format, loader, validator, condition language, state machine, engine."""
