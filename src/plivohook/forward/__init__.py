"""Forwarding: every stored message and delivery report, handed on to the user's app, signed.

- :mod:`.event`: the event of a record (its JSON, stable id and conversation) and its schema.
- :mod:`.outbox`: the interface the stores implement (claims, leases, ordering).
- :mod:`.retry`: the backoff schedule and the maximum age.
- :mod:`.http`: Standard Webhooks POSTs; :mod:`.jetstream`: NATS JetStream publishes.
- :mod:`.worker`: claims, delivers, records.

Nothing is imported here: the submodules need the server extra (httpx, nats-py,
standardwebhooks), and the core package must import without it.
"""
