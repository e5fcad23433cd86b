"""Recording every input of a live run, and replaying it deterministically (docs/replay.md).

``config`` holds the ``record:`` section, ``writer`` the recorder a live daemon feeds (source
taps, the fusion journal, published messages), ``reader`` opens a recording (skipping what
is damaged, and saying so).  The replay driver, which builds stages from a config like the
composition root does, is ``daemon/replay.py``; bundle comparison ``daemon/evaluate.py``.
This package imports no config: ``config/root.py`` includes its section.
"""
