"""The one error the command line answers with a single line and exit code 2.

Every refusal of input, a setting out of range, an unreadable file, a backend this machine
cannot serve, is an L2LError (or one of its kinds below); anything else that escapes is a bug.
"""


class L2LError(Exception):
    """Input the program cannot work from; its message names the input and what is wrong."""


class ConfigError(L2LError):
    """A setting that is unknown or out of range."""
