"""Suite-wide settings.

Under ``pytest -n N`` every worker process would otherwise start as many torch threads as there
are cores: N workers × cores threads on a small CI machine spin against each other (measured here:
one training step 0.06 CPU-s with one thread, 0.55 CPU-s with two under load). One thread per
worker keeps the cores busy without oversubscription.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
