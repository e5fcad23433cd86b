"""Load and validate config.yaml; every problem becomes one line naming field, value, expectation."""

from __future__ import annotations

import difflib
import functools
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


@functools.cache
def _schema() -> dict[str, Any]:
    return Config.model_json_schema()


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names the config schema allows at `loc` (a mapping's path); [] if unknown."""
    schema = _schema()
    defs = schema.get("$defs", {})

    def deref(node: dict[str, Any]) -> dict[str, Any]:
        for _ in range(16):
            if "$ref" in node:
                node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
            elif "properties" not in node and ("anyOf" in node or "allOf" in node):
                objs = [deref(n) for n in node.get("anyOf", node.get("allOf", []))]
                node = next((n for n in objs if "properties" in n or "items" in n), {})
            else:
                break
        return node

    node = deref(schema)
    for part in loc:
        node = deref(node.get("items", {}) if isinstance(part, int) else
                     node.get("properties", {}).get(part, {}))
    return list(node.get("properties", {}))


def _hint(loc: tuple[Any, ...]) -> str:
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], _fields_at(loc[:-1]), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """The field path, then the name (or id) of the list item it is in:
    `events[0] (cat_present)`, `events[0].threshold_on (cat_present)`."""
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(part, int) and isinstance(node, dict):
            label = node.get("name", node.get("id"))
            if isinstance(label, str) and label:
                return f"{_path(loc)} ({_one_line(label)[:64]})"
    return _path(loc)


def _lines(err: ValidationError, data: Any = None) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # discriminated unions put the tag in loc: keep the path readable
        msg = e["msg"].removeprefix("Value error, ")
        where = _where(loc, data)
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field{_hint(loc)} (value {_short(value)})")
        elif e["type"] == "missing":
            lines.append(f"{where}: required field missing")
        elif isinstance(value, dict | list) and len(_short(value)) > 40:
            lines.append(f"{where}: {msg}")  # the whole section is the value: the path names it
        else:
            lines.append(f"{where}: {msg} (got {_short(value)})")
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
        raise ConfigError(source, _lines(err, data)) from None
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
