"""kql.types: names, sizes, member lookup through anonymous members, bitfields."""

import pytest

from kql.types import (
    Member, MemberNotFoundError, Type, TypeNotFoundError, TypeSourceBase, array_of,
    builtin_type, normalize_base_name, parse_type_name, pointer_to, sizeof,
)

INT = builtin_type("int")
ULONG = builtin_type("unsigned long")
CHAR = builtin_type("char")


def make_struct():
    # struct s { int a; union { struct { int b; int c:3, d:5; }; long e; }; char name[16]; };
    inner = Type("struct", None, 8, members=[
        Member("b", INT, 0), Member("c", INT, 32, 3), Member("d", INT, 35, 5)])
    union = Type("union", None, 8, members=[Member(None, inner, 0), Member("e", ULONG, 0)])
    return Type("struct", "s", 32, members=lambda: [
        Member("a", INT, 0), Member(None, union, 64), Member("name", array_of(CHAR, 16), 128)])


def test_member_through_anonymous():
    s = make_struct()
    m, off = s.member("c")
    assert (m.name, off, m.bit_size) == ("c", 64 + 32, 3)
    assert s.member("d")[1] == 64 + 35
    assert s.member("e")[1] == 64
    assert s.offsetof("name") == 16
    assert s.member("name[3]")[1] == 128 + 24
    with pytest.raises(MemberNotFoundError):
        s.member("nope")
    assert not s.has_member("nope")


def test_typedef_strip_and_sizes():
    s = make_struct()
    td = Type("typedef", "s_t", target=s)
    assert td.size == 32 and sizeof(td) == 32
    assert td.strip_typedefs() is s
    assert td.member("a")[1] == 0
    assert sizeof(array_of(td, 3)) == 96
    assert sizeof(pointer_to(td)) == 8
    with pytest.raises(ValueError):
        sizeof(Type("struct", "fwd", None, complete=False))


def test_type_names():
    s = make_struct()
    assert pointer_to(s).type_name() == "struct s *"
    assert array_of(CHAR, 16).type_name() == "char [16]"
    assert pointer_to(array_of(CHAR, 16)).type_name() == "char (*)[16]"
    assert pointer_to(pointer_to(CHAR.qualified(["const"]))).type_name() == "const char **"
    fn = Type("function", target=INT, params=[(None, pointer_to(CHAR))])
    assert pointer_to(fn).type_name() == "int (*)(char *)"


@pytest.mark.parametrize("spelling,canon", [
    ("long unsigned int", "unsigned long"), ("unsigned long int", "unsigned long"),
    ("long long unsigned int", "unsigned long long"), ("short int", "short"),
    ("unsigned", "unsigned int"), ("signed char", "signed char"), ("u64", "u64"),
])
def test_normalize(spelling, canon):
    assert normalize_base_name(spelling) == canon


def test_parse_type_name():
    tn = parse_type_name("struct list_head *[2]")
    assert (tn.kind, tn.name, tn.suffixes) == ("struct", "list_head",
                                               [("pointer", frozenset()), ("array", 2)])
    assert parse_type_name("const char *").qualifiers == {"const"}
    with pytest.raises(ValueError):
        parse_type_name("struct *")
    with pytest.raises(ValueError):
        parse_type_name("int (*)(void)")


class _Source(TypeSourceBase):
    def __init__(self, named):
        super().__init__()
        self.named = named

    def _find_named(self, kind, name):
        return self.named.get((kind, name))


def test_type_source():
    s = make_struct()
    src = _Source({("struct", "s"): s, ("base", "unsigned long"): ULONG})
    assert src.find_type("struct s *").target is s
    assert src.find_type("long unsigned int").size == 8
    assert src.find_type("unsigned long [4]").size == 32
    assert src.find_type("int").size == 4  # builtin fallback
    with pytest.raises(TypeNotFoundError):
        src.find_type("struct nope")


def test_enum():
    e = Type("enum", "pid_type", 4, enumerators=[("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1)])
    assert e.enum_value("PIDTYPE_TGID") == 1
    assert e.enum_name(0) == "PIDTYPE_PID"
    assert e.enum_name(7) is None


def test_unqualified_does_not_change_the_shared_type():
    from kql.types import int_type
    const_int = int_type("int", 4, True).qualified(("const",))
    plain = const_int.unqualified()
    assert plain.qualifiers == frozenset() and const_int.qualifiers == frozenset({"const"})
    assert plain is not const_int
