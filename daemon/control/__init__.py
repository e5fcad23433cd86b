"""Control: the ROUTER socket that serves `perceptd send/status` and friends, its request
models (requests), and the client helpers the CLI uses (client)."""
