"""Configuration: every variable, with Open WebUI's names, parsed into typed values once at start-up.

Holds `Settings` (the table of variables), the value types and parsers (`values`, `network`), the
security-header table (`headers`), loading with every problem reported at once (`loading`), the
single-sign-on rules across variables (`sign_on`) and the production review (`review`).

The innermost layer: it imports nothing of wardgate but `wardgate.errors`, and nothing else reads
the environment. Components receive the parsed values, never the text.
"""

from wardgate.config.loading import load_settings, redacted_settings, variable_names
from wardgate.config.settings import Settings
from wardgate.config.values import Role

__all__ = ["Role", "Settings", "load_settings", "redacted_settings", "variable_names"]
