"""The installed voxelflow's version, in the lowest layer so that every layer may record it.

Kept equal to ``[project] version`` in pyproject.toml (``tests/test_api.py`` checks).
"""

__version__ = "0.1.0"
