"""Transport security: CURVE keys, the client allowlist, the ZAP handler."""
