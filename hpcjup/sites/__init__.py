"""Built-in site presets: one TOML file per cluster (see hpcjup/config/sites.py)."""
