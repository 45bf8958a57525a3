"""voxelflow.engine."""
