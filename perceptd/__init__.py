"""perceptd: streaming edge perception daemon."""
__version__ = "0.1.0"
