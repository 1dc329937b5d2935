"""The handshake between the model ranks' library and the servers: reports, checks, replies."""
