"""Fuzzing in the normal suite (issue #13): every target of tests/fuzzing.py
runs a bounded number of hypothesis examples (about a minute in all).

A target may end in a KqlError (exit 1 or 2); any other exception is a
finding.  For long runs: ``python tests/fuzzing.py campaign`` or
``python tests/fuzzing.py atheris TARGET -max_total_time=36000``."""

import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fuzzing  # noqa: E402

# examples per target: the dump target opens the whole sample each time
EXAMPLES = {"dump": 15, "flattened": 200, "elf": 300, "vmcoreinfo": 500, "notes": 500,
            "btf": 150, "grammar": 500, "query": 400, "saved_query": 200}
SCALE = float(os.environ.get("KQL_FUZZ_SCALE", "1"))  # e.g. 100 for a long run


def _settings(name):
    return settings(max_examples=max(1, int(EXAMPLES[name] * SCALE)), deadline=None,
                    database=None, derandomize=SCALE == 1,
                    suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_target_never_fails_internally(name):
    target = fuzzing.TARGETS[name]

    @_settings(name)
    @given(st.binary(min_size=8, max_size=64))
    def run(data):
        target(data)
    run()


@settings(max_examples=int(200 * SCALE), deadline=None, database=None,
          derandomize=SCALE == 1, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_query_error(text):
    fuzzing.target_grammar(text.encode("utf-8", "surrogatepass"))


def test_dump_cases_cover_every_region():
    regions = fuzzing.regions()
    for name in ("header", "subheader", "vmcoreinfo", "notes", "bitmap1", "bitmap2",
                 "descriptors", "btf", "kallsyms", "orc", "tasks", "printk", "pages"):
        assert regions.get(name), name
    data, what, _q = fuzzing.dump_case(1, "btf")
    assert what.startswith("btf: pfn ") and data != fuzzing.sample()
