"""The exceptions acceleron raises. Every message says what to do next."""

from __future__ import annotations


class AcceleronError(Exception):
    """Base class of every error raised by acceleron."""


class UnknownBackendError(AcceleronError, ValueError):
    """The accelerator name matches no known or installed backend."""


class BackendNotInstalledError(AcceleronError, ImportError):
    """No usable backend is installed, or the one asked for is missing."""


class BackendUnavailableError(AcceleronError, ImportError):
    """The backend is installed but cannot run here (a missing runtime, an unsupported platform)."""


class PluginLoadError(AcceleronError, ImportError):
    """A plugin failed to import or registered something invalid (raised in strict mode)."""


class TaskNotSupportedError(AcceleronError, ValueError):
    """The task is unknown, or no backend asked for supports it."""


class InvalidOptionError(AcceleronError, ValueError):
    """A backend option is unknown or has a bad value."""


class InvalidInputError(AcceleronError, ValueError):
    """Model inputs the exported graph cannot take (a missing or an unexpected tensor)."""


class InputTooLongError(InvalidInputError):
    """An input is longer than the model can take (its position table or its graph's static shape)."""


class ArtifactNotFoundError(AcceleronError, FileNotFoundError):
    """``export=False`` was given but the source holds no artifact this backend can load."""


class UntrustedArtifactError(AcceleronError, PermissionError):
    """An artifact that is code (TorchScript, pickles) was found in a model folder not trusted to run code."""


class ExportError(AcceleronError, RuntimeError):
    """Converting the PyTorch model to the backend's format failed."""


class ValidationError(AcceleronError):
    """An exported model's outputs differ from PyTorch's beyond the tolerance (``strict=True``)."""


class ArtifactLoadError(AcceleronError, OSError):
    """An artifact (or the model files it needs) exists but cannot be loaded: truncated, corrupt, or not
    matching ``config.json``."""


class InferenceError(AcceleronError, RuntimeError):
    """The backend's runtime failed to run a forward; the message names the backend and the inputs,
    then quotes the runtime's own error."""


class CacheError(AcceleronError, OSError):
    """The export cache could not be read or written."""


class UnsafePathError(AcceleronError, ValueError):
    """A path given or found (``subfolder``, ``file_name``, a symlinked artifact) leads outside its model folder."""


class RowError(AcceleronError, ValueError):
    """A row of a bulk job could not be processed and the job was asked to stop (``on_error="raise"``)."""

    def __init__(self, row_id: object, message: str) -> None:
        super().__init__(message)
        self.row_id = row_id

    def __reduce__(self) -> tuple[type[RowError], tuple[object, str]]:
        # Ray ships a worker's exception to the driver by pickling it: keep both arguments.
        return (type(self), (self.row_id, str(self)))
