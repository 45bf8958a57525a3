"""voxelflow.zoo."""
