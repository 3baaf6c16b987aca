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

from mtl_deploy.atomic import INTEGRITY, atomic_directory, sha256_file
from mtl_deploy.errors import MtlDeployError, first_line
from mtl_deploy.exporters.graphs import dynamic_shapes
from mtl_deploy.exporters.onnx_graph import TupleOutputs
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import ExportSource
from mtl_deploy.exporters.verify import ParityError, prove_parity, random_inputs, torch_outputs

ARTIFACTS = {"pt2": "model.pt2", "aoti": "model.aoti.pt2", "torchscript": "model.pt"}
RUNTIMES = {"pt2": "torch.export", "aoti": "aotinductor", "torchscript": "torchscript"}


def _exported_program(wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    return torch.export.export(wrapper, example, dynamic_shapes=(dynamic_shapes(wrapper.signature, named=False),))


def _write(format: str, wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    if format == "pt2":
        torch.export.save(_exported_program(wrapper, example), str(path))
    elif format == "aoti":
        torch._inductor.aoti_compile_and_package(_exported_program(wrapper, example), package_path=str(path))
    else:
        with warnings.catch_warnings():  # every torch.jit call warns that it is deprecated
            warnings.simplefilter("ignore")
            torch.jit.trace(wrapper, example, check_trace=False, strict=False).save(str(path))


def reload_artifact(format: str, path: Path) -> Callable:
    """The artifact at `path` loaded from disk, as a callable; a file that does not load is
    one MtlDeployError."""
    try:
        if format == "pt2":
            return torch.export.load(str(path)).module()
        if format == "aoti":
            return torch._inductor.aoti_load_package(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path))
    except Exception as err:  # each loader raises its own types for a corrupt file
        raise MtlDeployError(f"{path} does not load as a {format} artifact "
                             f"({first_line(err, 160)})") from None


def torch_runner(loaded: Callable, names: list[str], input_names: list[str]) -> Callable[[dict], dict]:
    """feeds in, numpy out: a reloaded artifact as one runtime of a parity proof."""
    def run(feeds: dict) -> dict:
        with torch.no_grad():
            outputs = loaded(*[torch.from_numpy(feeds[name]) for name in input_names])
        return {name: value.numpy() for name, value in zip(names, outputs)}
    return run


def export_torch(source: ExportSource, out_dir: str | Path, format: str, *, atol: float, rtol: float,
                 batch_sizes) -> ExportReport:
    model, names = source.model, source.task_names
    signature = source.signature
    wrapper = TupleOutputs(model, names, signature).eval()
    with atomic_directory(out_dir, "export", source.paths) as staging:
        path = staging / ARTIFACTS[format]
        try:
            _write(format, wrapper, tuple(random_inputs(model, 4).values()), path)
        except Exception as err:  # tracers and compilers raise many types; the user needs the first line
            raise MtlDeployError(f"{format} export failed: {first_line(err, 300)}") from err
        run = torch_runner(reload_artifact(format, path), names, signature.names)
        parity = prove_parity({RUNTIMES[format]: run}, torch_outputs(model, names), source.input_sets, batch_sizes,
                              atol, rtol)
        if not parity.passed:
            raise ParityError(parity.failure_message() + "; no export was written")
        manifest = {**source.base_manifest(), **source.io_manifest(), "artifact": path.name, "artifact_format": format,
                    "model_sha256": sha256_file(path), "parity": parity.to_dict(), "integrity": INTEGRITY}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, parity)
