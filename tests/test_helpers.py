"""The conventions of kql/helpers/__init__.py, checked over every helper
module: the kernel argument's one name, C types of object parameters in the
docstrings, kernel variables declared once next to the helpers and resolvable
on a real dump."""

import importlib
import inspect
import pkgutil

import pytest

import kql.helpers
from fixtures import fixture
from kql.kernel import open_kernel

MODULES = [importlib.import_module(f"kql.helpers.{m.name}")
           for m in pkgutil.iter_modules(kql.helpers.__path__)]


def _functions():
    for module in MODULES:
        for name, f in vars(module).items():
            if inspect.isfunction(f) and f.__module__ == module.__name__:
                yield module, name, f


def test_the_kernel_argument_has_one_name():
    bad = [f"{m.__name__}.{name}({p})" for m, name, f in _functions()
           for p in inspect.signature(f).parameters if p.startswith("prog")]
    assert bad == []
    # the helpers that take the kernel, take it first
    takers = [(m, name, f) for m, name, f in _functions()
              if "kernel" in inspect.signature(f).parameters]
    assert len(takers) > 50
    assert [f"{m.__name__}.{name}" for m, name, f in takers
            if list(inspect.signature(f).parameters)[0] != "kernel"
            and name != "per_cpu"] == []


def test_object_parameters_name_their_c_type():
    checked, bad = 0, []
    for m, name, f in _functions():
        if name not in getattr(m, "__all__", ()):
            continue
        for p in inspect.signature(f).parameters.values():
            if "Object" in str(p.annotation):
                checked += 1
                if f":param {p.name}:" not in (f.__doc__ or ""):
                    bad.append(f"{m.__name__}.{name}({p.name})")
    assert checked > 100 and bad == []


def test_kernel_variables_are_declared_once():
    seen: dict[str, str] = {}
    twice = []
    for module in MODULES:
        for name in getattr(module, "KERNEL_VARIABLES", {}):
            if name in seen:
                twice.append((name, seen[name], module.__name__))
            seen[name] = module.__name__
    assert twice == []
    assert kql.helpers.kernel_variables().keys() == seen.keys()
    assert seen["init_task"] == "kql.helpers.pid" and seen["runqueues"] == "kql.helpers.sched"


def test_kernel_variables_resolve_on_the_sample_dump():
    """Each declared variable the sample kernel (6.1) has gets its type from
    the declaration: a misspelt type is an error here, not a NULL in a query.
    The one exception: tk_core is an anonymous struct before Linux 6.13
    (commit "timekeeping: Define a struct type for tk_core to make it
    reusable"; kql.helpers.sys.timekeeper reads it by offset then)."""
    import kql.helpers as H
    from kql.types import TypeNotFoundError
    k = open_kernel(fixture("sample").dump())
    try:
        resolved, missing = [], []
        for name in H.kernel_variables():
            if k.symbols.get(name) is None:
                continue
            try:
                resolved.append((name, k.var_type(name)))
            except TypeNotFoundError:
                missing.append(name)
        assert missing == ["tk_core"]
        assert len(resolved) > 40
        types = dict(resolved)
        assert types["init_task"].type_name() == "struct task_struct"
        assert types["__per_cpu_offset"].type_name() == f"unsigned long [{k.nr_cpu_ids}]"
    finally:
        k.close()


@pytest.mark.parametrize("name", ["no_such_variable_anywhere"])
def test_undeclared_variable_needs_a_type(name):
    k = open_kernel(fixture("sample").dump())
    try:
        with pytest.raises(LookupError, match="pass type="):
            k.var_type(name)
    finally:
        k.close()
