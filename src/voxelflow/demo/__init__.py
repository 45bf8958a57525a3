"""The ``voxelflow demo``: a small real-MRI segmentation experiment, end to end."""
