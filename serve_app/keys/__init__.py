"""API keys for programs (docs/api.md §E12)."""
