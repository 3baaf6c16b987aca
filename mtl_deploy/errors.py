"""User-facing errors: one line naming the problem and the fix, mapped to CLI exit codes.

`InputError` is a usage error (bad path, unknown name, wrong shape, non-finite data): the
CLI exits with 2. `MtlDeployError` is a failure of the work itself (corrupt checkpoint,
parity mismatch, unwritable output): exit 1.
"""


class MtlDeployError(RuntimeError):
    """A failure the user should read as one line; the CLI exits with code 1."""

    exit_code = 1


class InputError(MtlDeployError, ValueError):
    """Bad input from the user (arguments, files, data); the CLI exits with code 2."""

    exit_code = 2


def bounded(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, so that no value pasted into a message (a huge
    field, thousands of names) can make it longer than a line."""
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text)} chars)"
