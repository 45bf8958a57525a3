"""voxelflow.networks."""
