"""wardgate: the security gateway for self-hosted AI deployments."""

from wardgate.config import Settings, load_settings
from wardgate.errors import ConfigError, WardgateError

__version__ = "0.1.0"
__all__ = ["ConfigError", "Settings", "WardgateError", "__version__", "load_settings"]
