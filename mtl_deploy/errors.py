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
