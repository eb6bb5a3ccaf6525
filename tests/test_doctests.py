"""Run the before/after examples in the planner's docstrings: every module of
kql.planner (each rule has one), found by listing the package."""

import doctest
import importlib
import pkgutil

import pytest

import kql.planner

MODULES = ["kql.planner"] + sorted(f"kql.planner.{m.name}"
                                   for m in pkgutil.iter_modules(kql.planner.__path__))


def test_every_rule_module_is_run():
    rules = {f"kql.planner.{r.__name__}" for r in kql.planner.RULES}
    assert rules <= set(MODULES), rules - set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)  # the module, even where a rule shadows its name
    failures, tests = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    if name.removeprefix("kql.planner.") in {r.__name__ for r in kql.planner.RULES}:
        assert tests > 0, f"rule module {name} has no doctest"
