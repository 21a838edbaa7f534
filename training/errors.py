"""Domain errors of the training component; the CLI turns each into one readable line and an exit code."""

from contracts.errors import ProductError


class TrainingError(ProductError):
    """A training, registry or promotion failure the user can act on."""

    exit_code = 1


class RegistryError(TrainingError):
    """MLflow could not be reached, or the registry is not in the state the command needs."""

    exit_code = 4
