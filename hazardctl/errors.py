"""One small exception hierarchy; the CLI maps each class to a one-line message and an exit code."""


class HazardError(Exception):
    """An expected failure the user can fix; printed as one line, never as a traceback."""

    exit_code = 1


class ConfigError(HazardError):
    """Bad or missing configuration (file, field, flag)."""

    exit_code = 2


class ServiceUnavailable(HazardError):
    """A service we depend on (Kafka broker, LLM endpoint) did not answer in time."""

    exit_code = 3


class DeliveryError(HazardError):
    """A message could not be delivered downstream; raised when a stage cannot go on safely."""

    exit_code = 4
