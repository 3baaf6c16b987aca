"""Builds the C++ kernels (and the CUDA ones, with a CUDA torch and nvcc) as
mtl_deploy._C; all metadata lives in pyproject.toml.

The extension is optional: without torch at build time (isolated builds) or without
a working compiler the package installs without it, and mtl_deploy.ops falls back to
a cached JIT build on first use, then to the PyTorch reference. The hash of csrc/ is
compiled into the binary so the loader never uses a build older than the sources.
"""

import importlib.util
import warnings
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _sources_module():
    # mtl_deploy/ops/sources.py by path: the package cannot be imported before it is built.
    spec = importlib.util.spec_from_file_location("_mtl_sources", ROOT / "mtl_deploy" / "ops" / "sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _extension_options():
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        warnings.warn("torch is not importable at build time: installing without the C++ kernels")
        return {}
    src = _sources_module()

    class OptionalBuildExtension(BuildExtension):
        """Turns a failed compile into a warning: the kernels are an accelerator."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # compiler missing or broken: keep the install
                warnings.warn(f"building mtl_deploy._C failed ({exc}); the kernels will JIT-build or fall back")

    flags = [*src.CXX_FLAGS, f'-DMTL_DEPLOY_SOURCE_HASH="{src.source_hash()}"']
    sources = [str(p.relative_to(ROOT)) for p in src.cpp_sources()]
    if src.cuda_build():
        extension = CUDAExtension(
            "mtl_deploy._C",
            sources + [str(p.relative_to(ROOT)) for p in src.cuda_sources()],
            extra_compile_args={"cxx": [*flags, *src.CUDA_CXX_FLAGS], "nvcc": src.NVCC_FLAGS},
            py_limited_api=True,
        )
    else:
        extension = CppExtension("mtl_deploy._C", sources, extra_compile_args={"cxx": flags}, py_limited_api=True)
    return {
        "ext_modules": [extension],
        "cmdclass": {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)},
        "options": {"bdist_wheel": {"py_limited_api": "cp310"}},
    }


setup(**_extension_options())
