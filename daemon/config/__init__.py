"""Configuration: pydantic models per concern, loaded from YAML, errors naming the field.

The root model imports every plugin's config (sources, stages, sockets), and those modules
import `config.events`; resolving the root lazily keeps `config.events` importable on its own
(no import cycle through this package).
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
