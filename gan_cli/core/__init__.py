"""Configuration: the schema, building components from `_target_` nodes, override checks,
and what a checkpoint may hold."""
