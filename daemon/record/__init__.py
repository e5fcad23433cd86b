"""Recording every input of a live run, and replaying it deterministically (docs/replay.md).

``config`` holds the ``record:`` section, ``writer`` the recorder a live daemon feeds (source
taps, the fusion journal, published messages), ``reader`` opens a recording (skipping what
is damaged, and saying so) and ``replay`` runs it through the same stages, fusion and
decoders on a virtual clock.
"""
