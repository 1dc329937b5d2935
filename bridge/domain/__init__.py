"""The index space: server blocks, halo boxes and routes between model and server ranks (pure)."""
