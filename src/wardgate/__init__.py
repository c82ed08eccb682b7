"""wardgate: the security gateway for self-hosted AI deployments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wardgate.config import Settings, load_settings
    from wardgate.errors import ConfigError, WardgateError

__version__ = "0.1.0"
__all__ = ["ConfigError", "Settings", "WardgateError", "__version__", "load_settings"]

_EXPORTS = {
    "Settings": "config",
    "load_settings": "config",
    "ConfigError": "errors",
    "WardgateError": "errors",
}


def __getattr__(name: str) -> Any:
    """The exports, imported at first use: `python -m wardgate` imports this package before
    `wardgate.__main__` can stop the garbage collector for the start-up imports."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wardgate' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"wardgate.{_EXPORTS[name]}"), name)
