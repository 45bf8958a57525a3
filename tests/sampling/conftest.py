"""Fixtures for the sampling tests: tiny anisotropic phantoms with a non-identity affine."""

from __future__ import annotations

import pytest
from sampling_fixtures import make_subject

from voxelflow.data.cached import CachedSubject


@pytest.fixture
def subject() -> CachedSubject:
    return make_subject()


@pytest.fixture
def memmap_subject(tmp_path) -> CachedSubject:
    return make_subject(memmap_dir=tmp_path)
