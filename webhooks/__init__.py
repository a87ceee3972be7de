"""Signed webhooks (CONTRACT.md E4), without Ray or HTTP serving: signing, URL safety and the
sender that works through the stored deliveries."""
