"""voxelflow.transforms."""
