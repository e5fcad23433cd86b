"""Config loading under hypothesis (mutated defaults, arbitrary structures, raw bytes): every
invalid config is a ConfigError with one-line messages, never another exception; and through the
CLI, exit 2 with `error:` lines and no traceback."""

from __future__ import annotations

import random
import subprocess
import sys

import yaml

from tests.fuzz import fuzzers
from tests.fuzz.fuzzers import REPO, default_config
from tests.reliability.harness import reps


def test_config_structures() -> None:
    counter, invalid = fuzzers.Counter(), fuzzers.Counter()
    fuzzers.config_in_process(reps(1500, 20_000), counter, invalid)
    assert invalid.n > counter.n // 2  # most mutations are invalid: the fuzzer reaches validation


def test_config_file_bytes(tmp_path) -> None:
    counter, invalid = fuzzers.Counter(), fuzzers.Counter()
    fuzzers.config_text(reps(1000, 20_000), counter, invalid, tmp_path)
    assert invalid.n > 0


def _cli(path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perceptd", "check-config", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_cli_exit_2_and_one_line_errors(tmp_path) -> None:
    rng = random.Random(5)
    good = default_config()
    bad = [
        b"\x00\xff" * 50,
        b"events: [\n",
        yaml.safe_dump({**good, "bundle": {"dir": "a\x00b"}}).encode(),
        yaml.safe_dump({**good, "runtime": {"device": "tpu", "intra_op_threads": 0}}).encode(),
        yaml.safe_dump({**good, "control": {"endpoint": "tcp://0.0.0.0:1"}}).encode(),
        yaml.safe_dump({**good, "events": [{"name": "Bad Name!", "prompts": []}]}).encode(),
        yaml.safe_dump({"a\nb": 1}).encode(),
        bytes(rng.randrange(256) for _ in range(300)),
    ]
    for i, raw in enumerate(bad):
        path = tmp_path / f"bad{i}.yaml"
        path.write_bytes(raw)
        res = _cli(path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (raw[:80], res.returncode, res.stderr)
        assert lines and all(ln.startswith("error: ") for ln in lines), res.stderr
        assert "Traceback" not in res.stderr
    missing = _cli(tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
