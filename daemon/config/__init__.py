"""Configuration: pydantic models per concern, loaded from YAML, errors naming the field."""

from perceptd.daemon.config.loader import ConfigError, load_config, parse_config
from perceptd.daemon.config.root import Config

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]
