"""One exception hierarchy: the CLI turns every `EdgeQuantError` into a one-line message.

Each message says what is wrong and what to do about it; nothing else in the package raises a
bare ValueError at a user.
"""

from __future__ import annotations


class EdgeQuantError(Exception):
    """Base class of every user-facing error (bad input, bad config, unwritable output)."""

    exit_code = 2


class ConfigError(EdgeQuantError):
    """A configuration value is invalid or inconsistent."""


class ModelError(EdgeQuantError):
    """A model file is missing, corrupt, truncated, or not something edgequant can handle."""


class DataError(EdgeQuantError):
    """Calibration or evaluation data is empty, mismatched with the model, or not finite."""


class OutputError(EdgeQuantError):
    """An output location does not exist or cannot be written."""


class NothingToQuantizeError(EdgeQuantError):
    """The model holds no operator the chosen method can quantize."""


class DependencyError(EdgeQuantError):
    """An optional dependency (torch, a dataset package) is missing."""


class UnsupportedOperatorError(EdgeQuantError):
    """A node would run in float on a target where `--strict` asks for integer only."""
