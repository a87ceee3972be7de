"""Signed webhooks (docs/api.md §E4), without Ray or HTTP serving: signing, URL safety and the
sender that works through the stored deliveries."""
