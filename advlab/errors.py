"""Errors that advlab reports to the user as one clear line (no traceback).

Every message names the file, key or value at fault and what is wrong with it.
"""


class AdvlabError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits with status 2."""


class ConfigError(AdvlabError, ValueError):
    """A config value is out of range or inconsistent (raised before any data is read)."""


class DataError(AdvlabError, ValueError):
    """A data file or folder is missing or malformed."""


class AttackError(AdvlabError, ValueError):
    """An attack cannot run on this task (e.g. AutoAttack's DLR parts on 2 classes)."""


class TrainingError(AdvlabError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


class MissingDependencyError(AdvlabError, ImportError):
    """An optional dependency (e.g. torchattacks) is not installed; says how to install it."""
