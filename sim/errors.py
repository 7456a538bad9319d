"""Errors a user can act on.

Every error raised for a user mistake derives from :class:`ServeLabError`. The command line
catches it, prints ``error: <message>`` and exits with status 2, never a traceback. A message
says where (flag, file, YAML path), what was expected, what was found and what to do.
"""


class ServeLabError(Exception):
    """A user mistake or an impossible configuration, with an actionable message."""


class CatalogError(ServeLabError):
    """Unknown model or GPU, or a model config.json that cannot be read."""


class ConfigError(ServeLabError):
    """An engine or workload setting that is out of range or inconsistent."""


class ManifestError(ServeLabError):
    """A Kubernetes manifest that does not match what ServeLab can simulate."""
