"""plivohook: verify, keep and answer Plivo messaging webhooks."""

__version__ = "0.1.0"
