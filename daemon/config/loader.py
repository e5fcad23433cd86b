"""Load and validate config.yaml; every problem becomes one line naming field, value, expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from perceptd.daemon.config.root import Config
from perceptd.daemon.security.curve import validation_context


class ConfigError(Exception):
    """Carries one human line per problem; the CLI prints them and exits 2."""

    def __init__(self, source: str, lines: list[str]) -> None:
        self.source = source
        self.lines = [_one_line(line) for line in lines]
        super().__init__("\n".join(f"{source}: {line}" for line in lines))


def _one_line(text: str) -> str:
    """Control characters (a newline in a field name, say) are shown escaped: one error, one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lines(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # discriminated unions put the tag in loc: keep the path readable
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"{_path(loc)}: unknown field (value {_short(e.get('input'))})")
        elif e["type"] == "missing":
            lines.append(f"{_path(loc)}: required field missing")
        else:
            lines.append(f"{_path(loc)}: {msg} (got {_short(e.get('input'))})")
    return lines


def _nul_fields(data: Any, loc: tuple[Any, ...] = ()) -> list[str]:
    """Strings holding a NUL byte (never valid, and fatal to path handling) by field path."""
    if isinstance(data, str):
        return [f"{_path(loc)}: contains a NUL byte"] if "\x00" in data else []
    if isinstance(data, dict):
        return [ln for k, v in data.items() for ln in _nul_fields(v, (*loc, k))]
    if isinstance(data, list):
        return [ln for i, v in enumerate(data) for ln in _nul_fields(v, (*loc, i))]
    return []


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"<root>: expected a mapping, got {type(data).__name__}"])
    bad = _nul_fields(data)
    if bad:
        raise ConfigError(source, bad)
    try:
        cfg = Config.model_validate(data, context=validation_context(data))
    except ValidationError as err:
        raise ConfigError(source, _lines(err)) from None
    try:
        return cfg.resolved(base_dir or Path.cwd())
    except (OSError, ValueError) as exc:  # a path the OS cannot resolve
        raise ConfigError(source, [f"<paths>: cannot resolve a configured path ({exc})"]) from None


def load_config(path: Path | str) -> Config:
    """Read YAML and validate; relative paths resolve against the config file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"<file>: cannot read ({exc.__class__.__name__}: {exc})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(p), [f"<yaml>: not valid YAML at {where}: {problem}"]) from None
    return parse_config(data, str(p), p.resolve().parent)
