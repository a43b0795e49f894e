"""Exceptions raised by napari-pbip.

Every message names the bad value, what was expected and what to do about it.
"""


class PbipError(Exception):
    """Base class of all napari-pbip errors; the CLI prints these without a traceback."""


class SettingsError(PbipError, ValueError):
    """A settings field has a value outside its valid range."""


class DatasetError(PbipError):
    """A data set folder, file name or mask cannot be read as expected."""


class LabelParseError(DatasetError, ValueError):
    """An image-level label could not be parsed from a file name."""


class ModelNotFoundError(PbipError, KeyError):
    """A model name is not registered, or its weights are not available offline."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class BankError(PbipError):
    """An image bank is missing, inconsistent, or cannot be edited as asked."""


class CheckpointError(PbipError):
    """A checkpoint does not match the model, classes or bank it is used with."""


class SlideError(PbipError):
    """A slide cannot be opened or lacks what the job needs (e.g. its um/px)."""


class UnreadableRegionError(SlideError):
    """Part of a slide cannot be decoded (a damaged tile); the message names the slide, level and tile."""


class OutputExistsError(PbipError, FileExistsError):
    """An output exists and overwriting was not asked for."""


class OutputConflictError(PbipError, ValueError):
    """An output path is, contains or lies inside one of the job's inputs."""


class OutputNotWritableError(PbipError, OSError):
    """An output cannot be written: a folder on its path is a file, or a folder is read-only."""


class TrainingDivergedError(PbipError, ArithmeticError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


DEBUG_ENV = "PBIP_DEBUG"  # set to 1 for `pbip` to print the traceback of an error too (like --debug)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, as the CLI prints it (and a cohort records a failed slide).

    A napari-pbip error is its message (it names the bad value and the fix). A file-system
    error names its path and what the system said. Anything else is unexpected, so its type is
    shown and the line says how to get the traceback for a report.
    """
    if isinstance(exc, PbipError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        text = (
            f"{exc.filename}{target}: {exc.strerror or exc}; check the path, its permissions and free space"
        )
    else:
        text = (
            f"{type(exc).__name__}: {exc} (unexpected; rerun with `pbip --debug ...` or {DEBUG_ENV}=1 for the "
            "traceback and report it)"
        )
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
