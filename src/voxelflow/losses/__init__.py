"""voxelflow.losses."""
