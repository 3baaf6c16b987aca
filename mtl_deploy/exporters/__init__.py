"""Export to ONNX, proof of parity with PyTorch, re-verification and serving latency."""

from mtl_deploy.exporters.exporter import FORMATS, export
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import weights_hash
from mtl_deploy.exporters.latency import serving_latency
from mtl_deploy.exporters.reverify import read_export_manifest, verify_export
from mtl_deploy.exporters.verify import ParityError, ParityReport, check_graph, prove_parity

__all__ = ["FORMATS", "ExportReport", "ParityError", "ParityReport", "check_graph", "export", "prove_parity",
           "read_export_manifest", "serving_latency", "verify_export", "weights_hash"]
