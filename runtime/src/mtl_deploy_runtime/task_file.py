"""Task files: one adapted few-shot task kept on disk, so that a later process predicts
without the support set. The file is an `.npz` (written without pickle, read with
`allow_pickle=False`) of the adapted state, the arrays an adapter export's `adapt.onnx`
computes and its `predict.onnx` takes (prototypes; support embeddings and one-hot labels;
or adapted weights), beside its format and the weights hash of the model it belongs to.
A few KB; written under a temporary name and renamed.

Reading one checks everything against the adapter export's manifest before a graph sees
it: the format, the model, the arrays' names, dtypes and shapes, and finite values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mtl_deploy_runtime.atomic import atomic_file
from mtl_deploy_runtime.errors import InputError, MtlDeployError, axis_clash, bounded
from mtl_deploy_runtime.version import __version__

FORMAT = "mtl_deploy.task"
FORMAT_VERSION = 1
FIELDS = ("format", "format_version", "library_version", "weights_sha256")  # beside the state's arrays
MAX_BYTES = 1 << 30  # the arrays of a task file, as stored: checked before any is read


def state_spec(manifest: dict) -> list[dict]:
    """The adapted state an adapter export's manifest declares: each array's name, dtype and
    shape (an axis name where the size varies from task to task)."""
    arrays = manifest.get("state", {}).get("arrays") if isinstance(manifest.get("state"), dict) else None
    if not (isinstance(arrays, list) and arrays and all(
            isinstance(a, dict) and isinstance(a.get("name"), str) and a.get("dtype") == "float32"
            and isinstance(a.get("shape"), list) and all(isinstance(d, (str, int)) for d in a["shape"])
            for a in arrays)):
        raise MtlDeployError("the adapter export's manifest.json is corrupt (its state arrays); export again")
    return arrays


def write_task_file(path: str | Path, state: dict[str, np.ndarray], manifest: dict) -> Path:
    """Save an adapted task's `state` for the adapter export whose `manifest` made it."""
    path = Path(path)
    with atomic_file(path) as staging:
        with open(staging, "wb") as handle:  # a handle: np.savez would append .npz to a name
            np.savez(handle, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION),
                     library_version=np.array(__version__), weights_sha256=np.array(manifest["weights_sha256"]),
                     **state)
    return path


def read_task_file(path: str | Path, manifest: dict) -> dict[str, np.ndarray]:
    """The adapted state in the task file at `path`, checked against the adapter export's
    `manifest`: any problem is one InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"task file {str(path)!r} does not exist; save one with AdaptedTask.save(path)")
    arrays = _arrays(path)
    fields = {name: arrays.pop(name, None) for name in FIELDS}
    if _text(fields["format"]) != FORMAT:
        raise InputError(f"{path} is not an mtl_deploy task file (it holds {bounded(sorted(arrays)) or 'nothing'}); "
                         "save one with AdaptedTask.save(path)")
    version = fields["format_version"]
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) > FORMAT_VERSION:
        raise InputError(f"{path} was written by a newer or unknown mtl-deploy ({_text(fields['library_version'])}); "
                         "upgrade mtl-deploy-runtime")
    if _text(fields["weights_sha256"]) != manifest.get("weights_sha256"):
        raise InputError(f"{path} was adapted with another model than this adapter export's; adapt the task again "
                         "with this adapter, or load it with the adapter that made it")
    spec = state_spec(manifest)
    names = [entry["name"] for entry in spec]
    if sorted(arrays) != sorted(names):
        raise InputError(f"{path} holds the arrays {bounded(sorted(arrays))}; this adapter's state is {names}")
    sizes: dict[str, tuple[str, int]] = {}
    for entry in spec:
        _check_array(path, entry, arrays[entry["name"]], sizes)
    return {name: np.ascontiguousarray(arrays[name]) for name in names}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path`, its stored size bounded first; never unpickled."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"one {archive.dtype} array, not an .npz of arrays")
        with archive:
            stored = sum(info.file_size for info in archive.zip.infolist())
            if stored > MAX_BYTES:
                raise ValueError(f"{stored} bytes of arrays, more than a task's state takes ({MAX_BYTES})")
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path} is not a readable task file ({str(err)[:160]}); "
                         "save the task again with AdaptedTask.save(path)") from None


def _text(value: np.ndarray | None) -> str | None:
    """A 0-d string array's text (None for anything else)."""
    return str(value) if value is not None and value.shape == () and value.dtype.kind == "U" else None


def _check_array(path: Path, entry: dict, value: np.ndarray, sizes: dict[str, tuple[str, int]]) -> None:
    name, shape = entry["name"], entry["shape"]
    fits = value.dtype == np.float32 and value.ndim == len(shape) and all(
        (n >= 1 if isinstance(d, str) else n == d) for d, n in zip(shape, value.shape))
    if not fits:
        raise InputError(f"{path}: array {name!r} is {value.dtype} {list(value.shape)}; this adapter's is "
                         f"float32 {shape}")
    if clash := axis_clash(sizes, shape, name, value.shape):
        dim, first, size, here = clash
        raise InputError(f"{path}: axis {dim!r} is {size} in {first!r} but {here} in {name!r}; the file is not one "
                         "task's state")
    if not np.isfinite(value).all():
        raise InputError(f"{path}: array {name!r} contains NaN or inf; adapt the task again")
