"""The web console: one page served at / of the HTTP port (Live, Timeline, Samples, Teach,
Health), a client of the daemon's typed read interfaces; see docs/console.md.

Modules: config (the `console:` section), feed (bounded buffer of published messages),
host (what the console reads from the daemon), teach (try a prompt), app (the WSGI app).
"""
