"""voxelflow.applications."""
