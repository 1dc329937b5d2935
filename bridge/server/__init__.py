"""The inference servers: one engine over any transport (``python -m bridge.server``)."""
