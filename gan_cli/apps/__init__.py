"""Command-line entry points (gan-train, gan-sample, gan-bench) and the sweep summary."""
