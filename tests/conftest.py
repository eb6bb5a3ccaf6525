"""Session-wide test setup: dumps opened through fixtures.kernel() are
closed once, at the end."""

import pytest

import fixtures


def pytest_collection_modifyitems(config, items):
    """`corpus` tests (the whole SQL corpus) run only when -m names them."""
    if "corpus" in (config.getoption("markexpr") or ""):
        return
    keep = [i for i in items if i.get_closest_marker("corpus") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


def pytest_runtest_setup(item):
    # before the runner sets up the item's fixtures (conftest hooks run first)
    fixtures.CURRENT_TEST = item


@pytest.fixture(scope="session", params=fixtures.FIXTURES)
def dump_kernel(request):
    """``(fixture, Kernel)`` for each fixture dump, opened on its own (its
    ``warnings`` are the helper tests' alone), shared by the tests of
    kql.helpers (tests/test_helpers_<module>.py)."""
    from kql.kernel import open_kernel
    fx = fixtures.fixture(request.param)
    k = open_kernel(fx.dump())
    yield fx, k
    k.close()


@pytest.fixture(scope="session", autouse=True)
def _close_shared_kernels():
    yield
    fixtures.close_kernels()
