"""The version of zfwidgets (kept in step with pyproject.toml; written into saved atlases)."""

__version__ = "0.1.0.dev0"
