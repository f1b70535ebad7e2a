"""YAML presets shipped with embedx (extraction presets and tuning grids)."""
