"""User-facing errors: one line naming the problem and the fix, mapped to CLI exit codes.

`InputError` is a usage error (bad path, unknown name, wrong shape, non-finite data): the
CLI exits with 2. `MtlDeployError` is a failure of the work itself (corrupt checkpoint,
parity mismatch, unwritable output): exit 1. The helpers keep messages one short line
and turn bad arrays into InputErrors (numpy only: the runtime uses them too).
"""

import numpy as np


class MtlDeployError(RuntimeError):
    """A failure the user should read as one line; the CLI exits with code 1."""

    exit_code = 1


class InputError(MtlDeployError, ValueError):
    """Bad input from the user (arguments, files, data); the CLI exits with code 2."""

    exit_code = 2


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
