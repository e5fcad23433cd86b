"""perceptd: streaming edge perception daemon."""
from perceptd.daemon import __version__

__all__ = ["__version__"]
