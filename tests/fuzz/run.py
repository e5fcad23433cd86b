"""The full fuzz run: every target at its full count, figures written to docs/fuzzing.md.

    python -m tests.fuzz.run                      # 100,000 control inputs per target, ~20 min
    python -m tests.fuzz.run --control 5000 --atheris 50000 --config 2000   # a quick look

Targets: the control core in-process (hypothesis), a live daemon's control socket (hypothesis),
the control core under atheris (coverage-guided), config structures and config file bytes
(hypothesis), the CLI on invalid configs, and the broken-media corpora (tests/fuzz/test_media_fuzz.py).
A crash is any exception or contract violation; a hang is a request without a reply in 5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.fuzz import fuzzers
from tests.fuzz.control import ContractViolation, SocketClient
from tests.fuzz.live import fuzz_daemon

REPO = Path(__file__).resolve().parents[2]
SEEDS = [b'\x01{"type":"command","text":"turn on the lights"}', b'\x01{"type":"status"}',
         b'\x01{"type":"reload"}', b'\x01{"type":"label","sample":"20260101T000000-0123456789ab",'
         b'"event":"lights_on"}', b"\x01turn on the lights", b'\x02\x05{"a"}\x00{"type":"status"}']
DICT = ['"type"', '"command"', '"label"', '"status"', '"reload"', '"text"', '"sample"', '"event"',
        "{", "}", "[", "]", ":", ",", "null", "true", "false", "NaN", "Infinity", '"\\u0000"', '"\\ud800"']


@dataclass
class Target:
    name: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    unanswered: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    unit: str = ""  # "" for generated inputs; " tests" for a pytest file over fixed corpora

    def row(self) -> str:
        rate = f" ({self.inputs / self.seconds:,.0f}/s)" if self.seconds and not self.unit else ""
        return (f"| {self.name} | {self.inputs:,}{self.unit} | {self.crashes} | {self.hangs} | "
                f"{self.unanswered} | {self.seconds:,.0f} s{rate} | {'; '.join(self.notes)} |")


def _hypothesis(t: Target, counter: fuzzers.Counter, fn: Callable[[], None]) -> None:
    t0 = time.monotonic()
    try:
        fn()
    except ContractViolation as exc:
        t.hangs += "no reply" in str(exc)
        t.crashes += "no reply" not in str(exc)
        t.notes.append(f"FAILED: {str(exc).splitlines()[0][:200]}")
    except Exception as exc:  # noqa: BLE001 - a crash of the target, recorded
        t.crashes += 1
        t.notes.append(f"CRASH: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        traceback.print_exc()
    t.inputs = counter.n
    t.seconds = time.monotonic() - t0


def control_targets(n: int, tmp: Path) -> list[Target]:
    inproc = Target("control core in-process (hypothesis: JSON structure, raw bytes, mutations, multipart)")
    c = fuzzers.Counter()
    _hypothesis(inproc, c, lambda: fuzzers.control_in_process(n, c))

    sock = Target("live daemon control socket (hypothesis, same strategies, DEALER with/without delimiter)")
    daemon = fuzz_daemon(tmp)
    client = SocketClient(daemon.control_endpoint)
    c = fuzzers.Counter()
    try:
        _hypothesis(sock, c, lambda: fuzzers.control_socket(client, n, c))
        sock.unanswered = client.sent - client.answered
        alive = daemon.proc.poll() is None and daemon.request({"type": "status"})["ok"]
        log = daemon.log(10_000_000)
        sock.crashes += (not alive) + log.count("Traceback")
        top = ", ".join(f"{k} {v:,}" for k, v in Tally(client.outcomes).most_common(6))
        sock.notes.append(f"daemon alive after: {alive}; tracebacks in its log: {log.count('Traceback')}; "
                          f"replies: {top}")
    finally:
        client.close()
        daemon.kill()
    return [inproc, sock]


def _dict_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace('"', '\\"')


def atheris_target(runs: int, tmp: Path) -> Target:
    t = Target("control core under atheris (coverage-guided, seeded, JSON dictionary)")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i, s in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(s)
    (tmp / "json.dict").write_text("".join(f'"{_dict_escape(w)}"\n' for w in DICT))
    t0 = time.monotonic()
    try:
        import atheris  # noqa: F401
    except ImportError as exc:
        t.notes.append(f"atheris not installed ({exc})")
        return t
    res = subprocess.run([sys.executable, "-m", "tests.fuzz.atheris_control", f"-runs={runs}",
                          "-max_len=4096", f"-dict={tmp / 'json.dict'}", str(corpus)],
                         capture_output=True, text=True, cwd=REPO, timeout=3600, check=False)
    t.seconds = time.monotonic() - t0
    done = re.search(r"Done (\d+) runs", res.stderr)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", res.stderr)
    t.inputs = int(done.group(1)) if done else 0
    if res.returncode != 0:
        t.crashes = 1
        t.notes.append("CRASH: " + res.stderr.strip().splitlines()[-1][:200])
    if cov:
        t.notes.append(f"coverage {cov[-1][0]} edges, {cov[-1][1]} features, corpus {cov[-1][2]} inputs")
    return t


def config_targets(n: int, tmp: Path) -> list[Target]:
    out = []
    for name, fn in [("config structures via parse_config (hypothesis: mutated defaults, any JSON)",
                      fuzzers.config_in_process),
                     ("config file bytes via load_config (hypothesis: binary, text, cut-off file)",
                      lambda n_, c_, i_: fuzzers.config_text(n_, c_, i_, tmp))]:
        t = Target(name)
        c, invalid = fuzzers.Counter(), fuzzers.Counter()
        _hypothesis(t, c, lambda fn=fn, c=c, invalid=invalid: fn(n, c, invalid))
        t.notes.append(f"{invalid.n:,} invalid, each a ConfigError of one-line messages")
        out.append(t)
    return out


def pytest_target(name: str, path: str) -> Target:
    t = Target(name, unit=" tests")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", path], capture_output=True, text=True,
                         cwd=REPO, timeout=1800, check=False)
    t.seconds = time.monotonic() - t0
    passed = re.search(r"(\d+) passed", res.stdout)
    failed = re.search(r"(\d+) failed", res.stdout)
    t.inputs = int(passed.group(1)) if passed else 0
    t.crashes = int(failed.group(1)) if failed else (0 if res.returncode == 0 else 1)
    t.notes.append(f"pytest: {res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.returncode}")
    return t


def write_doc(targets: list[Target], args: argparse.Namespace, wall: float) -> Path:
    load = os.getloadavg()[0]
    head = (f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m tests.fuzz.run "
            f"--control {args.control} --atheris {args.atheris} --config {args.config}` on "
            f"{os.cpu_count()} cores (load average {load:.1f}, shared); {wall / 60:.1f} min.")
    rows = "\n".join(t.row() for t in targets)
    total = sum(t.inputs for t in targets if not t.unit)
    bad = sum(t.crashes + t.hangs + t.unanswered for t in targets)
    text = (Path(__file__).parent / "fuzzing_template.md").read_text().format(
        head=head, rows=rows, total=f"{total:,}", verdict="no crash, no hang, every request answered"
        if bad == 0 else f"**{bad} failures**: see the notes")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    out = Path(args.out) / "fuzzing.md"
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--control", type=int, default=100_000, help="inputs per control target")
    ap.add_argument("--atheris", type=int, default=1_000_000, help="atheris runs")
    ap.add_argument("--config", type=int, default=20_000, help="inputs per config target")
    ap.add_argument("--out", default=str(REPO / "docs"))
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="perceptd-fuzz-") as d:
        tmp = Path(d)
        (tmp / "daemon").mkdir()
        (tmp / "atheris").mkdir()
        (tmp / "config").mkdir()
        targets += control_targets(args.control, tmp / "daemon")
        targets.append(atheris_target(args.atheris, tmp / "atheris"))
        targets += config_targets(args.config, tmp / "config")
    targets.append(pytest_target("config CLI: exit 2, `error:` lines, no traceback (8 invalid files + "
                                 "a missing one)", "tests/fuzz/test_config_fuzz.py::test_cli_exit_2_"
                                 "and_one_line_errors"))
    targets.append(pytest_target("broken media corpora (tests/fuzz/media.py: images, WAVs, videos; "
                                 "empty/huge text) via probe in-process + CLI, camera source, WAV replay",
                                 "tests/fuzz/test_media_fuzz.py"))
    out = write_doc(targets, args, time.monotonic() - t0)
    print(f"wrote {out}")
    return 0 if all(t.crashes + t.hangs + t.unanswered == 0 for t in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
