"""PyTorch-native artifacts of a multi-task model, each reloaded and proved against the
model like the ONNX export:

- `pt2`: a `torch.export` program (Python serving with `torch.export.load`);
- `aoti`: an AOTInductor package, compiled ahead of time and loadable from C++ with
  `torch::inductor::AOTIModelPackageLoader` (or `torch._inductor.aoti_load_package`);
- `torchscript`: a traced TorchScript module for existing libtorch pipelines (torch.jit
  is deprecated in current PyTorch; prefer `aoti` for new C++ deployments).

Every artifact returns the task outputs as a tuple in the manifest's output order.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from mtl_deploy.atomic import atomic_directory, sha256_file
from mtl_deploy.errors import MtlDeployError
from mtl_deploy.exporters.onnx_graph import BATCH_DIM, TupleOutputs
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import ExportSource
from mtl_deploy.exporters.verify import ParityError, prove_parity, random_inputs, torch_outputs

ARTIFACTS = {"pt2": "model.pt2", "aoti": "model.aoti.pt2", "torchscript": "model.pt"}
RUNTIMES = {"pt2": "torch.export", "aoti": "aotinductor", "torchscript": "torchscript"}


def _exported_program(wrapper: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    return torch.export.export(wrapper, (example,), dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},))


def _write_and_reload(format: str, wrapper: torch.nn.Module, example: torch.Tensor, path: Path) -> Callable:
    """Write the artifact to `path` and return it reloaded from disk, as a callable."""
    if format == "pt2":
        torch.export.save(_exported_program(wrapper, example), str(path))
        return torch.export.load(str(path)).module()
    if format == "aoti":
        torch._inductor.aoti_compile_and_package(_exported_program(wrapper, example), package_path=str(path))
        return torch._inductor.aoti_load_package(str(path))
    with warnings.catch_warnings():  # every torch.jit call warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.jit.trace(wrapper, example, check_trace=False).save(str(path))
        return torch.jit.load(str(path))


def export_torch(source: ExportSource, out_dir: str | Path, format: str, *, atol: float, rtol: float,
                 batch_sizes) -> ExportReport:
    model, names = source.model, source.task_names
    wrapper = TupleOutputs(model, names).eval()
    with atomic_directory(out_dir) as staging:
        path = staging / ARTIFACTS[format]
        try:
            loaded = _write_and_reload(format, wrapper, random_inputs(model, 4), path)
        except Exception as err:  # tracers and compilers raise many types; the user needs the first line
            raise MtlDeployError(f"{format} export failed: {str(err).strip().splitlines()[0]}") from err

        def run(feeds: dict) -> dict:
            with torch.no_grad():
                outputs = loaded(torch.from_numpy(feeds["x"]))
            return {name: value.numpy() for name, value in zip(names, outputs)}

        parity = prove_parity({RUNTIMES[format]: run}, torch_outputs(model, names), source.input_sets, batch_sizes,
                              atol, rtol)
        if not parity.passed:
            raise ParityError(parity.failure_message() + "; no export was written")
        manifest = {**source.base_manifest(), **source.io_manifest(), "artifact": path.name, "artifact_format": format,
                    "model_sha256": sha256_file(path), "parity": parity.to_dict()}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, parity)
