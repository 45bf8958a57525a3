"""voxelflow.sampling."""
