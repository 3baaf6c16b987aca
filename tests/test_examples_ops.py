"""The fused-kernel example runs as a user runs it."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fused_inner_loop.py"


def test_fused_inner_loop_example_runs():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "backend: " in done.stdout
    assert "after adaptation" in done.stdout and "routed heads output: (8, 10)" in done.stdout
