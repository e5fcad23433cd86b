"""Coverage-guided fuzzing of the control core with atheris (libFuzzer for Python).

    python -m tests.fuzz.atheris_control -runs=100000 [-max_len=4096] [corpus_dir]

Input bytes -> 0-3 frames -> ControlServer.handle -> the reply contract (tests.fuzz.control).
A contract violation or any exception is a crash: libFuzzer prints it and exits non-zero.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from perceptd.daemon.control import requests as _requests  # noqa: F401 - instrumented
    from perceptd.daemon.control import server as _server  # noqa: F401
    from tests.fuzz.control import handle_bytes, in_process_server

SERVER = in_process_server()


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    n = fdp.ConsumeIntInRange(0, 3)
    frames = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048)) for _ in range(max(0, n - 1))]
    frames.append(fdp.ConsumeBytes(fdp.remaining_bytes()))
    handle_bytes(SERVER, frames if n else [])


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
