"""User-facing errors: one line naming the problem and the fix, mapped to CLI exit codes.

`InputError` is a usage error (bad path, unknown name, wrong shape, non-finite data): the
CLI exits with 2. `MtlDeployError` is a failure of the work itself (corrupt checkpoint,
parity mismatch, unwritable output): exit 1. The helpers keep messages one short line,
turn bad arrays into InputErrors, and give both command lines (mtl-deploy and
mtl-deploy-runtime) the same line and exit code for a failure.
"""

import numpy as np


class MtlDeployError(RuntimeError):
    """A failure the user should read as one line; the CLI exits with code 1."""

    exit_code = 1


class InputError(MtlDeployError, ValueError):
    """Bad input from the user (arguments, files, data); the CLI exits with code 2."""

    exit_code = 2


INTERRUPTED = "interrupted: nothing was written; any previous artifact is intact"
COMMAND_ERRORS = (MtlDeployError, OSError, KeyboardInterrupt)  # what a command reports in one line


def command_error(err: BaseException, interrupted: str = INTERRUPTED) -> tuple[str, int]:
    """The line a command prints on stderr, and its exit code, for one of `COMMAND_ERRORS`:
    the library's message, an operating-system error (a full disk, a permission: the library
    wrote nothing half), or Ctrl-C (130)."""
    if isinstance(err, MtlDeployError):
        return f"error: {err}", err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return interrupted, 130
    where = f": {err.filename}" if getattr(err, "filename", None) else ""
    return f"error: {getattr(err, 'strerror', None) or err}{where}; nothing was replaced", 1


def first_line(text_or_error: str | BaseException, limit: int = 200) -> str:
    """The first non-empty line of a message (another library's error, often a long trace),
    for a one-line message; an error without text is named by its type."""
    text = str(text_or_error)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not line and isinstance(text_or_error, BaseException):
        line = type(text_or_error).__name__
    return line[:limit]


def bounded(items: list, limit: int = 8) -> str:
    """A list for a one-line message: at most `limit` items, then how many more."""
    shown = ", ".join(str(item)[:40] for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def numeric_array(values, name: str) -> np.ndarray:
    """`values` as a finite numeric array, or an InputError naming `name`."""
    try:
        array = np.asarray(values)
    except ValueError as err:  # ragged nested lists
        raise InputError(f"{name} is not a rectangular array ({str(err)[:120]})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf; clean it first")
    return array


def axis_clash(sizes: dict[str, tuple[str, int]], shape: list, name: str, actual: tuple[int, ...]
               ) -> tuple[str, str, int, int] | None:
    """Arrays that share a named axis must agree on its size: record each named axis of
    array `name` (manifest `shape`, real `actual`) in `sizes` (axis -> first array, its
    size), and return the first disagreement as (axis, that first array, its size there,
    its size in `name`)."""
    for axis, dim in enumerate(shape):
        if isinstance(dim, str):
            first = sizes.setdefault(dim, (name, actual[axis]))
            if first[1] != actual[axis]:
                return dim, first[0], first[1], actual[axis]
    return None
