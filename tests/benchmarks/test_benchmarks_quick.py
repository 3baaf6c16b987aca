"""The benchmarks run end to end in their quick mode and print every table (no timing asserted)."""

import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def test_quick_benchmark_prints_tables(tmp_path):
    out = tmp_path / "results.md"
    done = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    for heading in ("## 1 thread", "## 2 threads", "### C: routed rows", "## Targets"):
        assert heading in done.stdout
    assert "| A | 2nd-order step | fused |" in out.read_text()


def test_wrapping_overhead_benchmark_prints_its_table():
    script = RUN.with_name("wrapped_overhead.py")
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| BERT 2x64, 32 tokens | 32 | ONNX Runtime |" in done.stdout and "worst:" in done.stdout
