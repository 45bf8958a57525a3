"""voxelflow makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys


def _policy_seen(env: dict[str, str]) -> str:
    code = "import voxelflow, os; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_passive_by_default_before_torch_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen(env) == "PASSIVE"
    # set by `import voxelflow` itself, which does not import torch (so the runtime reads it)
    code = "import sys, voxelflow; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "False"


def test_the_users_choice_is_kept() -> None:
    assert _policy_seen({**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
