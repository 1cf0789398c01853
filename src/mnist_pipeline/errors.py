"""The project's error types.

Every failure a user can cause (bad params, corrupt data, a dead mirror) raises a subclass of
``PipelineError`` whose message names what was wrong and what was expected. Stage entries catch
``PipelineError`` and turn it into one log line and a non-zero exit instead of a traceback.
"""


class PipelineError(Exception):
    """Base class for errors caused by input, data or environment rather than by a bug."""


class ConfigError(PipelineError):
    """params.yaml is missing a key, has an unknown key, or a value of the wrong type or range."""


class IdxFormatError(PipelineError):
    """Bytes that claim to be an MNIST IDX file are not a valid one."""


class DownloadError(PipelineError):
    """No mirror delivered a file whose size and checksum match the pinned values."""


class ArtifactError(PipelineError):
    """A file written by an earlier stage is missing, unreadable or does not match its record."""
