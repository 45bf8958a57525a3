"""voxelflow.cli."""
