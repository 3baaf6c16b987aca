"""Writing artifacts without ever destroying anything: where an output may go, who owns it
while it is written, and how it replaces what was there.

- `check_output` refuses an output that is not empty, not new and not an mtl_deploy
  artifact of the same kind, or that equals, contains or lies inside an input.
- `OutputLock` makes one process at a time the owner of an output path (an fcntl lock on a
  hidden sibling file, released by the kernel when the process dies).
- `atomic_directory` builds a directory under a hidden temporary sibling and swaps it into
  place in one step (`renameat2(RENAME_EXCHANGE)` on Linux; elsewhere two renames, whose
  leftovers the next run recovers), so a killed run leaves the previous artifact intact.
- `atomic_file` does the same for one file.

Everything here uses the standard library only, so the torch-free runtime shares it.
Artifacts get the permissions of any file the user writes (the umask decides).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mtl_deploy_runtime.errors import InputError, MtlDeployError

# manifest "format" values of each kind of directory artifact; what may replace what
ARTIFACT_FORMATS = {
    "checkpoint": {"mtl_deploy.checkpoint"},
    "export": {"mtl_deploy.export", "mtl_deploy.adapter"},
    "relations": {"mtl_deploy.relations"},
    "triton model": {"mtl_deploy.triton_model"},
}
MARKER_FILES = ("manifest.json", "relations.json")  # where a directory says which artifact it is
TEMPORARY, RETIRED = ".tmp-", ".old-"  # hidden siblings: `.NAME.tmp-*` (being built), `.NAME.old-*` (replaced)


def artifact_format(directory: Path) -> str | None:
    """The mtl_deploy format a directory declares, or None when it is not ours."""
    for marker in MARKER_FILES:
        try:
            value = json.loads((directory / marker).read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value.startswith("mtl_deploy."):
            return value
    if (directory / "config.pbtxt").is_file() and artifact_format(directory / "1") == "mtl_deploy.export":
        return "mtl_deploy.triton_model"  # a Triton model directory: config.pbtxt beside version 1, an export
    return None


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_output(path: str | Path, kind: str, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse (InputError, nothing touched) an output that would destroy something:
    one that equals, contains or lies inside an input, or an existing directory that is
    neither empty nor an mtl_deploy artifact of `kind`."""
    path = Path(path)
    if path.is_symlink():
        raise InputError(f"--out {path} is a symbolic link; give the real directory path")
    out = _resolved(path)
    if out == Path.cwd().resolve() or out.parent == out:
        raise InputError(f"--out {path} is the current directory or a file-system root; give a new directory")
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        relation = ("is" if out == source else "contains" if out in source.parents
                    else "lies inside" if source in out.parents else None)
        if relation:
            raise InputError(f"--out {path} {relation} the input {given}; choose an output path outside the inputs")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{path} exists and is not a directory; choose another output path")
        if any(out.iterdir()) and artifact_format(out) not in ARTIFACT_FORMATS[kind]:
            raise InputError(f"{path} holds files that are not an mtl_deploy {kind}; nothing was changed: "
                             "give a new or empty directory")
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: Path, directory: bool) -> None:
    """Give a file made by mkstemp / mkdtemp (0600 / 0700) the mode any file of the user gets."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def make_tree_readable(root: Path) -> None:
    """`make_readable` for a directory and everything in it (some writers, safetensors
    among them, create their files 0600)."""
    make_readable(root, directory=True)
    for folder, folders, files in os.walk(root):
        for name in folders:
            make_readable(Path(folder) / name, directory=True)
        for name in files:
            make_readable(Path(folder) / name, directory=False)


class OutputLock:
    """Exclusive ownership of an output path by this process, or an InputError naming the
    owner. The lock file `.NAME.lock` beside the output is removed on release."""

    def __init__(self, path: str | Path):
        path = _resolved(path)
        self.path = path.parent / f".{path.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        created = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    os.close(fd)
                    if err.errno not in (errno.EACCES, errno.EAGAIN):
                        raise
                    owner = self._owner()
                    raise InputError(f"another mtl-deploy process{owner} is writing {self.path.parent / self.path.name[1:-5]}; "
                                     "wait for it to finish or choose another output") from None
                try:  # the file we locked may have been released and removed meanwhile: lock the current one
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            self._fd = fd
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as err:
            self.release()  # a full disk: leave no lock file, nor the folders made for it, behind
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise MtlDeployError(f"cannot write to {self.path.parent} ({err.strerror}); "
                                 "choose a writable output path") from None

    def _owner(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_directory(source: Path, path: Path) -> None:
    """Move the complete directory `source` to `path`, retiring whatever was there. With an
    atomic swap `path` is never missing; with two renames a kill between them leaves the old
    copy at `.NAME.old-PID`, which `recover_siblings` puts back."""
    if not path.exists():
        os.replace(source, path)
        return
    if _exchange(source, path):
        shutil.rmtree(source, ignore_errors=True)  # it now holds the old copy
        return
    retired = path.with_name(f".{path.name}{RETIRED}{os.getpid()}")
    os.replace(path, retired)
    os.replace(source, path)
    shutil.rmtree(retired, ignore_errors=True)


def recover_siblings(path: Path) -> None:
    """Clean up after a run killed while replacing `path` (call with its lock held): put a
    retired copy back when `path` is missing, and delete stale temporary siblings."""
    prefix = f".{path.name}"
    leftovers = sorted(p for p in path.parent.glob(f"{prefix}*")
                       if p.is_dir() and p.name[len(prefix):].startswith((TEMPORARY, RETIRED)))
    for leftover in leftovers:
        if not path.exists() and RETIRED in leftover.name and artifact_format(leftover):
            os.replace(leftover, path)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path, kind: str, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` when the block succeeds.
    `path` is checked first (`check_output`); this process owns it until the end."""
    path = Path(path)
    check_output(path, kind, inputs)
    path = _resolved(path)
    with OutputLock(path):
        try:
            recover_siblings(path)
            check_output(path, kind, inputs)  # as it is now that this process owns it
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMPORARY}", dir=path.parent))
        except OSError as err:
            raise MtlDeployError(f"cannot write to {path.parent} ({err.strerror}); choose a writable output path") from None
        try:
            yield staging
            make_tree_readable(staging)
            replace_directory(staging, path)
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise MtlDeployError(f"writing {path} failed ({err.strerror}); nothing was replaced") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) that replaces it when the block
    succeeds; an OS error (a full disk, an unwritable directory) is one MtlDeployError."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path to write")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY}", suffix=path.suffix, dir=path.parent)
        os.close(handle)
        make_readable(Path(name), directory=False)
    except OSError as err:
        raise MtlDeployError(f"cannot write {path} ({err.strerror}); choose a writable path") from None
    staging = Path(name)
    try:
        yield staging
        os.replace(staging, path)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise MtlDeployError(f"writing {path} failed ({err.strerror}); nothing was replaced") from None
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


INTEGRITY = ("sha256 hashes detect corruption, not tampering: whoever can edit these files can re-hash them; "
             "verify re-proves parity with its own tolerances, never the manifest's")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
