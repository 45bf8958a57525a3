"""``benchmarks/gpu.py``: one JSON line and exit 0 without a GPU; the same code runs on the CPU
with only torch + numpy (what a bare GPU machine has) besides the optional MONAI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
# pydantic and yaml come with the build path (config/build.py): carried as small wheels
HEAVY = ["nibabel", "SimpleITK", "pydicom", "scipy", "monai"]


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", code] if code else [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: it would benchmark")
def test_without_a_gpu_prints_one_json_line_and_exits_0() -> None:
    done = _run("--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["gpu"] is False and "CUDA" in record["reason"]


def test_cpu_smoke_run_needs_only_torch_and_numpy() -> None:
    """MONAI hidden: the comparison is skipped with a note and no heavy package is imported."""
    code = (
        "import sys, json, runpy\n"
        "sys.modules['monai'] = None\n"  # as if not installed
        f"sys.argv = ['gpu.py', '--device', 'cpu', '--window', '16', '16', '16', '--iterations', '1',"
        " '--workers', '0', '--channels', '2', '4', '8']\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if sys.modules.get(m) is not None)))\n"
    )
    done = _run(code=code)
    assert done.returncode == 0, done.stderr
    record_line, heavy_line = done.stdout.strip().splitlines()
    record = json.loads(record_line)
    assert json.loads(heavy_line) == []
    assert record["augmentation_windows_per_s"]["monai_randaffined"] is None
    assert any("MONAI comparison skipped" in note for note in record["notes"])
    assert set(record["training"]) == {"amp_off", "amp_bf16"}
    assert record["training"]["amp_off"]["iteration_ms"] > 0
    assert 0 <= record["training"]["amp_off"]["data_wait_fraction"] <= 1
