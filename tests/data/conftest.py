"""Fixtures of the data tests."""

import pytest
from celeba_fixtures import make_celeba


@pytest.fixture
def celeba_tree(tmp_path):
    return make_celeba(tmp_path), tmp_path
