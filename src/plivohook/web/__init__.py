"""The HTTP layer: the webhooks (the hot path), the admin API under /api, middleware.

Each module is a small ASGI piece; :mod:`plivohook.app` composes them. Nothing here is imported
by protocol/ or store/.
"""
