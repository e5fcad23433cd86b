"""Configuration: pydantic models per concern, loaded from YAML, errors naming the field.

The root model imports every plugin's config (sources, stages, sockets); the event vocabulary
they all read lives in `events/config.py`, so no room imports this package back (no cycle).
The root is resolved lazily so that importing a loader helper does not import every room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perceptd.daemon.config.loader import ConfigError, load_config, parse_config
    from perceptd.daemon.config.root import Config

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]


def __getattr__(name: str) -> Any:
    if name == "Config":
        from perceptd.daemon.config.root import Config

        return Config
    if name in ("ConfigError", "load_config", "parse_config"):
        from perceptd.daemon.config import loader

        return getattr(loader, name)
    raise AttributeError(name)
