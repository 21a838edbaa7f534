"""Domain errors of the training component; the CLI turns each into one readable line and an exit code."""


class TrainingError(Exception):
    """Base class: a failure the user can act on, with a message that says how."""

    exit_code = 1


class DataError(TrainingError):
    """The data is missing, unreadable or invalid."""

    exit_code = 3


class ConfigError(TrainingError):
    """The parameters or settings are invalid."""

    exit_code = 2


class RegistryError(TrainingError):
    """MLflow could not be reached, or the registry is not in the state the command needs."""

    exit_code = 4
