"""Configuration: ``coupling.toml`` and its dataclasses, NEMO-style namelists, the namcouple."""
