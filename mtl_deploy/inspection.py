"""What `mtl-deploy inspect` shows: tasks, inputs, outputs, opset, parameter count and
file sizes of a checkpoint or an export directory, read from manifests without loading
weights."""

from __future__ import annotations

import json
from pathlib import Path

from mtl_deploy.checkpoint import MANIFEST, read_manifest
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.runtime.predictor import read_export_manifest
from mtl_deploy.tables import table


def describe(path: str | Path) -> str:
    try:
        return _describe(Path(path))
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise MtlDeployError(f"{Path(path) / MANIFEST} is corrupt (bad or missing field {str(err)[:80]}); "
                             "export or save it again") from None


def _trunk(trunk) -> str:
    """A trunk config in a few words: a user network by its factory, not its whole config."""
    if not isinstance(trunk, dict) or trunk.get("type") not in ("module", "transformers"):
        return str(trunk)
    if trunk["type"] == "transformers":
        return f"transformers {trunk.get('hf_config', {}).get('model_type')} ({trunk.get('pooling')} pooling)"
    return f"module {trunk.get('factory')} {trunk.get('kwargs', {})} ({trunk.get('pooling')} pooling)"


def _inputs(manifest: dict) -> str:
    entries = manifest.get("inputs") or [{"name": "x", "dtype": "float32", "shape": ["batch", *manifest["input_shape"]]}]
    return ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in entries)


def _describe(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; give a checkpoint or export directory")
    if not (path / MANIFEST).is_file():
        raise InputError(f"{path} has no {MANIFEST}: it is neither a checkpoint nor an export")
    try:
        kind = json.loads((path / MANIFEST).read_text()).get("format")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        kind = None
    files = table(["file", "bytes"], [[f.name, f.stat().st_size] for f in sorted(path.iterdir()) if f.is_file()])
    if kind in ("mtl_deploy.export", "mtl_deploy.adapter"):
        m = read_export_manifest(path)
        tasks = m.get("tasks") or {m["task"]["name"]: {**m["task"], "output": m["outputs"][0]["name"]}}
        io = [["input", i["name"], i["dtype"], i["shape"], i.get("encoding", "")] for i in m["inputs"]]
        io += [["output", o["name"], o["dtype"], o["shape"],
                ", ".join(f"{name} ({t['kind']})" for name, t in tasks.items() if t["output"] == o["name"])]
               for o in m["outputs"]]
        parity = m.get("parity", {})
        what = (f"adapter ({m.get('algorithm')}, {m.get('steps')} steps, lr {m.get('lr')})"
                if kind == "mtl_deploy.adapter" else f"{m.get('artifact_format', 'onnx')} export")
        opset = f", opset {m['opset']}" if "opset" in m else ""
        lines = [f"{what} {path} (mtl_deploy {m.get('library_version')}{opset}, torch {m.get('torch_version')})",
                 table(["", "name", "dtype", "shape", "tasks / encoding"], io),
                 f"parameters: {m.get('parameters', 'n/a')}",
                 f"parity: {'passed' if parity.get('passed') else 'NOT passed'} in {', '.join(parity.get('runtimes', []))}"
                 f" at batches {parity.get('batch_sizes')}"]
    else:
        m = read_manifest(path)
        rows = [[t["name"], t["kind"], t["out_dim"]] for t in m["tasks"]]
        lines = [f"checkpoint {path} (mtl_deploy {m['library_version']}, torch {m['torch_version']})",
                 f"architecture: {m['architecture']['architecture']}, trunk {_trunk(m['architecture'].get('trunk'))}",
                 f"inputs: {_inputs(m)}  parameters: {m['parameters']}",
                 table(["task", "kind", "out_dim"], rows)]
    return "\n".join([*lines, files])

