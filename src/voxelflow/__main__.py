"""``python -m voxelflow`` (also what ``torchrun -m voxelflow`` runs)."""

import sys

from voxelflow.cli.main import main

sys.exit(main())
