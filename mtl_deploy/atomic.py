"""Write a directory artifact all-or-nothing: build it under a temporary sibling name, then
rename it into place, so an interrupted or failed run leaves the previous artifact intact."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mtl_deploy.errors import InputError, MtlDeployError


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` when the block succeeds."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a directory; choose another output path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise MtlDeployError(f"cannot write to {path.parent} ({err.strerror}); choose a writable output path") from None
    try:
        yield staging
        replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(source: Path, path: Path) -> None:
    """Move the complete directory `source` to `path`, retiring whatever was there."""
    if path.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, retired / path.name)
        os.replace(source, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(source, path)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
