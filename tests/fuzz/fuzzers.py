"""The fuzz targets as plain factories: pytest runs them with CI counts, `python -m
tests.fuzz.run` with the full counts and writes the figures to docs/fuzzing.md."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.control import ContractViolation, SocketClient, handle_bytes, in_process_server

REPO = Path(__file__).resolve().parents[2]


def _settings(n: int) -> settings:
    # generate only: no shrinking (the first failure is reported as is), no example database
    return settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))


BATCH = 20  # inputs per hypothesis example: drawing is the cost, and batches draw 3-4x faster


class Counter:
    def __init__(self) -> None:
        self.n = 0


def until(n: int, counter: Counter, make: Callable[[int], Callable[[], None]]) -> None:
    """Run hypothesis examples of BATCH inputs until `counter` reaches n inputs."""
    while counter.n < n:
        make(max(1, (n - counter.n) // BATCH))()


def control_in_process(n: int, counter: Counter) -> None:
    """n inputs straight into ControlServer.handle (the parser, validation and dispatch)."""
    server = in_process_server()

    def make(examples: int) -> Callable[[], None]:
        @_settings(examples)
        @given(st.lists(fs.frames, min_size=BATCH, max_size=BATCH))
        def run(batch: list[list[bytes]]) -> None:
            for frames in batch:
                counter.n += 1
                handle_bytes(server, frames, peer=b"p%d" % (counter.n % 7))

        return run

    until(n, counter, make)


def control_socket(client: SocketClient, n: int, counter: Counter) -> None:
    """n inputs over a live daemon's control socket, each answered within the hang timeout."""

    def make(examples: int) -> Callable[[], None]:
        @_settings(examples)
        @given(st.lists(st.tuples(fs.frames, st.booleans()), min_size=BATCH, max_size=BATCH))
        def run(batch: list[tuple[list[bytes], bool]]) -> None:
            for frames, delimited in batch:
                counter.n += 1
                client.send(frames, delimited)

        return run

    until(n, counter, make)


# --------------------------------------------------------------------------- config


def default_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


CONFIG_VALUES = (fs.json_values | st.sampled_from([
    "a\x00b", "/dev/null", "../../etc", "tcp://0.0.0.0:5560", "tcp://*:0", "ipc://", -1, 0, 10**30,
    1e309, float("nan"), "auto", "cuda", [], {}, None, "", "x" * 10_000]))


@st.composite
def mutated_configs(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """The default config with 1-4 edits: a value replaced, a key removed or an unknown key added."""
    cfg = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(cfg)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            if op == "replace":
                return draw(CONFIG_VALUES)
            continue
        parent = cfg
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        if op == "replace":
            parent[key] = draw(CONFIG_VALUES)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(CONFIG_VALUES)
    return cfg


def check_config_outcome(data: Any) -> bool:
    """parse_config either returns a Config or raises ConfigError with one-line messages.
    Returns True when the config was valid."""
    from perceptd.daemon.config import ConfigError, parse_config

    try:
        parse_config(data, "<fuzz>", REPO)
        return True
    except ConfigError as exc:
        if not exc.lines or any((not isinstance(ln, str)) or "\n" in ln or not ln.strip()
                                for ln in exc.lines):
            raise ContractViolation(f"config errors are not one-line messages: {exc.lines!r}") from None
        return False


def config_in_process(n: int, counter: Counter, invalid: Counter) -> None:
    """n config structures (mutated defaults, arbitrary JSON values) through parse_config."""
    base = default_config()

    @_settings(n)
    @given(mutated_configs(base) | fs.json_values)
    def run(data: Any) -> None:
        counter.n += 1
        if not check_config_outcome(data):
            invalid.n += 1

    run()


def config_text(n: int, counter: Counter, invalid: Counter, tmp: Path) -> None:
    """n raw file contents (YAML fragments, binary, cut-off config) through load_config."""
    from perceptd.daemon.config import ConfigError, load_config

    path = tmp / "fuzz.yaml"
    base = (REPO / "config.yaml").read_bytes()

    @_settings(n)
    @given(st.binary(max_size=400) | st.text(max_size=400).map(lambda s: s.encode("utf-8", "surrogatepass"))
           | st.integers(0, len(base)).map(lambda i: base[:i]))
    def run(raw: bytes) -> None:
        counter.n += 1
        path.write_bytes(raw)
        try:
            load_config(path)
        except ConfigError as exc:
            invalid.n += 1
            if any("\n" in ln or not ln.strip() for ln in exc.lines):
                raise ContractViolation(f"config errors are not one-line messages: {exc.lines!r}") from None

    run()
