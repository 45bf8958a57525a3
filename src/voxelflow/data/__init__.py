"""voxelflow.data."""
