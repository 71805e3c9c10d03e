"""The one error type of the data package."""


class DataError(ValueError):
    """A data set is missing, badly arranged or too small for the requested clients.

    The message names the path, domain or client at fault and says how to fix it.
    """
