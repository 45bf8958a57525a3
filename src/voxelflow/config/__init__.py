"""voxelflow.config."""
