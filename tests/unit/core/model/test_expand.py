"""Kubernetes $(VAR) expansion: the test table of k8s third_party/forked/golang/expansion, and more."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlink_plugins.core.model.expand import env_map, expand_k8s
from interlink_plugins.core.model.pod import EnvVar

CONTEXT = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}

# (name, input, expected) copied from kubernetes expand_test.go doExpansionTest
K8S_CASES = [
    ("whole string", "$(VAR_A)", "A"),
    ("repeat", "$(VAR_A)-$(VAR_A)", "A-A"),
    ("beginning", "$(VAR_A)-1", "A-1"),
    ("middle", "___$(VAR_B)___", "___B___"),
    ("end", "___$(VAR_C)", "___C"),
    ("compound", "$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("escape & expand", "$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
    ("compound escape", "$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
    ("mixed in escapes", "f000-$$VAR_A", "f000-$VAR_A"),
    ("backslash escape ignored", "foo\\$(VAR_C)bar", "foo\\Cbar"),
    ("backslash escape ignored 2", "foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
    ("lots of backslashes", "foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
    ("nested var references", "$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
    ("nested var references second type", "$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
    ("value is a reference", "$(VAR_REF)", "$(VAR_A)"),
    ("value is a reference x 2", "%%$(VAR_REF)--$(VAR_REF)%%", "%%$(VAR_A)--$(VAR_A)%%"),
    ("empty var", "foo$(VAR_EMPTY)bar", "foobar"),
    ("unterminated expression", "foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
    ("expression without operator", "f00__(VAR_A)__", "f00__(VAR_A)__"),
    ("shell special vars pass through", "$?_boo_$!", "$?_boo_$!"),
    ("bare operators are ignored", "$VAR_A", "$VAR_A"),
    ("undefined vars are passed through", "$(VAR_DNE)", "$(VAR_DNE)"),
    ("multiple (even) operators, var undefined", "$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
    ("multiple (even) operators, var defined", "$$$$$$(VAR_A)", "$$$(VAR_A)"),
    ("multiple (odd) operators, var undefined", "$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
    ("multiple (odd) operators, var defined", "$$$$$$$(VAR_A)", "$$$A"),
    ("missing open expression", "$VAR_A)", "$VAR_A)"),
    ("shell syntax ignored", "${VAR_A}", "${VAR_A}"),
    ("trailing incomplete expression not consumed", "$(VAR_B)_______$(A", "B_______$(A"),
    ("trailing incomplete expression, no content", "$(VAR_C)_______$(", "C_______$("),
    ("operator at end of input string is preserved", "$(VAR_A)foobarzab$", "Afoobarzab$"),
    ("shell escaped incomplete expr", "foo-\\$(VAR_A", "foo-\\$(VAR_A"),
    ("lots of $( in middle", "--$($($($($--", "--$($($($($--"),
    ("lots of $( in beginning", "$($($($($--foo$(", "$($($($($--foo$("),
    ("lots of $( at end", "foo0--$($($($(", "foo0--$($($($("),
    ("escaped operators in variable names are not escaped", "$(foo$$var)", "$(foo$$var)"),
    ("newline not expanded", "\n", "\n"),
]


@pytest.mark.parametrize(("name", "text", "expected"), K8S_CASES, ids=[c[0] for c in K8S_CASES])
def test_kubernetes_table(name: str, text: str, expected: str) -> None:
    assert expand_k8s(text, CONTEXT) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("$", "$"),
        ("$$", "$"),
        ("$$$", "$$"),
        ("$()", "$()"),  # empty name: not defined
        ("$(VAR_A))", "A)"),
        ("$((VAR_A))", "$((VAR_A))"),  # name "(VAR_A" is unknown, the rest is copied
        ("$é$(VAR_A)", "$éA"),  # a $ before a non-ASCII character keeps it whole
        ("€$(VAR_B)€", "€B€"),
        ("$\n$(VAR_C)", "$\nC"),
        ("`$(VAR_A)`", "`A`"),
    ],
)
def test_edges(text: str, expected: str) -> None:
    assert expand_k8s(text, CONTEXT) == expected


def test_values_are_not_expanded_again() -> None:
    assert expand_k8s("$(X)", {"X": "$(Y)$$", "Y": "no"}) == "$(Y)$$"


def test_defined_name_with_parens() -> None:
    # whatever the name, the reference ends at the first ')'
    assert expand_k8s("$(a(b)c)", {"a(b": "V"}) == "Vc)"


def test_env_map_later_duplicates_win() -> None:
    env = env_map([EnvVar("A", "1"), EnvVar("B", "2"), EnvVar("A", "3")])
    assert env == {"A": "3", "B": "2"}
    assert expand_k8s("$(A)$(B)", env) == "32"


_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@given(_text)
def test_without_dollar_is_identity(text: str) -> None:
    clean = text.replace("$", "")
    assert expand_k8s(clean, CONTEXT) == clean


@given(_text)
def test_unknown_references_leave_text_unchanged_except_double_dollar(text: str) -> None:
    # with no variables, the only change is "$$" -> "$" (scanning left to right)
    expected = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text) and text[i + 1] == "$":
            expected.append("$")
            i += 2
        elif text[i] == "$" and i + 1 < len(text) and text[i + 1] == "(":
            close = text.find(")", i + 2)
            end = close + 1 if close != -1 else i + 2
            expected.append(text[i:end])
            i = end
        else:
            expected.append(text[i])
            i += 1
    assert expand_k8s(text, {}) == "".join(expected)


@given(st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,8}\Z"), _text, max_size=4), _text)
def test_escaped_reference_is_literal(env: dict[str, str], tail: str) -> None:
    for name in env:
        assert expand_k8s(f"$$({name})", env) == f"$({name})"
        assert expand_k8s(f"$({name}){tail.replace('$', '')}", env) == env[name] + tail.replace("$", "")
