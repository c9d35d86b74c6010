"""The two errors every loader in ``minicompress.io`` raises for a bad file."""
import pickle


class FileFormatError(ValueError):
    """A file is corrupt, truncated, or not in the format its name or content claims.

    The message always names the file and the problem, e.g.
    ``model.safetensors: header length 2**40 bytes is larger than the file (1024 bytes)``.
    """


class UnsafePickleError(FileFormatError, pickle.UnpicklingError):
    """A pickle asks for something other than tensors and plain containers.

    Raised *before* anything named in the file is imported or called, so refusing a hostile file
    has no side effects. It is both a ``ValueError`` and a ``pickle.UnpicklingError``.
    """
