"""Session-wide test setup: dumps opened through fixtures.kernel() are
closed once, at the end."""

import pytest

import fixtures


def pytest_runtest_setup(item):
    # before the runner sets up the item's fixtures (conftest hooks run first)
    fixtures.CURRENT_TEST = item


@pytest.fixture(scope="session", autouse=True)
def _close_shared_kernels():
    yield
    fixtures.close_kernels()
