"""The product's one error hierarchy: every domain error is a :class:`ProductError`.

Each class says how it leaves the product: ``exit_code`` for the ``tabula`` CLI (mapped in one place,
``cli.exits.handle_errors``) and ``http_status`` for the prediction API (mapped in one place,
``service.errors.error_response``). The components' own families derive from it: ``training.errors``,
``service.errors``, ``release.errors``, ``load.runner``.
"""


class ProductError(Exception):
    """Base class: a failure the user can act on, with a message that says how."""

    exit_code: int = 1
    http_status: int = 500


class DataError(ProductError):
    """The data is missing, unreadable or invalid."""

    exit_code = 3


class ConfigError(ProductError):
    """The parameters or settings are invalid."""

    exit_code = 2
