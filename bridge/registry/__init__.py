"""The closure registry: manifests, the store of ``name@version`` entries, the torch runtime."""
