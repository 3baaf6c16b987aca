"""What every export returns: where it went, its manifest, and the parity it proved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtl_deploy.exporters.verify import ParityReport


@dataclass
class ExportReport:
    out_dir: Path
    manifest: dict
    parity: ParityReport
