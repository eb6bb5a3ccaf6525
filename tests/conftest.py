"""Session-wide test setup: dumps opened through fixtures.kernel() are
closed once, at the end."""

import pytest

import fixtures


@pytest.fixture(scope="session", autouse=True)
def _close_shared_kernels():
    yield
    fixtures.close_kernels()
