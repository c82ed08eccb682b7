"""The real fake upstream of the proxy tests, for the hostile-traffic tests too."""

from tests.proxy.conftest import upstream  # noqa: F401  (a fixture, registered by importing it)
