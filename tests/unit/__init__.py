"""The fast tier: no Redis, no process of its own (pure policy, schemas, the executor over in-memory stores)."""
