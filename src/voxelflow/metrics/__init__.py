"""voxelflow.metrics."""
