"""Run the before/after examples in the planner's docstrings."""

import doctest

import pytest

import kql.planner
import kql.planner.members


@pytest.mark.parametrize("module", [kql.planner, kql.planner.members])
def test_doctests(module):
    failures, _tests = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
