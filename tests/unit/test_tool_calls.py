"""One policy for a tool call's edges: its arguments parsed one way, its result cut within the limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnemo_core.tool_calls import (
    MAX_ARGUMENTS_CHARS,
    TRUNCATION_MARKER,
    ArgumentsInvalid,
    fit_result,
    parse_arguments,
)


def test_fit_keeps_short_text_and_marks_cuts_within_the_limit() -> None:
    assert fit_result("short", 10) == "short"
    cut = fit_result("y" * 1000, 120)
    assert len(cut) <= 120
    assert cut.startswith("y")
    assert "the tool returned 1000 characters" in cut
    assert fit_result("abc", 0) == "abc"
    # The sandbox sends only the first `limit` characters plus the full length.
    assert "returned 5000 characters" in fit_result("z" * 100, 100, total=5000)


def test_a_cut_result_is_its_start_then_the_marker_naming_both_lengths() -> None:
    text = "".join(str(i % 10) for i in range(500))

    cut = fit_result(text, 200)

    marker = TRUNCATION_MARKER.format(
        total=500, shown=200 - len(TRUNCATION_MARKER.format(total=500, shown=200))
    )
    assert cut == text[: 200 - len(marker)] + marker
    assert len(cut) == 200


def test_a_limit_too_small_for_the_marker_gets_the_bare_cut() -> None:
    assert fit_result("x" * 100, 20) == "x" * 20


@given(
    text=st.text(max_size=3000),
    limit=st.integers(min_value=-5, max_value=4000),
    extra=st.none() | st.integers(min_value=0, max_value=10**9),
)
def test_a_fitted_result_never_exceeds_the_limit_and_is_unchanged_when_it_fits(
    text: str, limit: int, extra: int | None
) -> None:
    total = None if extra is None else len(text) + extra

    fitted = fit_result(text, limit, total)

    whole = len(text) if total is None else total
    if limit <= 0 or whole <= limit:
        assert fitted == text
    else:
        assert len(fitted) <= limit
        assert fitted.startswith(
            text[: max(0, limit - len(TRUNCATION_MARKER.format(total=whole, shown=limit)))]
        )


def test_arguments_are_a_json_object_and_empty_text_means_none() -> None:
    assert parse_arguments('{"label": "human", "n": 2}') == {"label": "human", "n": 2}
    assert parse_arguments("") == {}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            "{not json",
            "the arguments are not valid JSON (Expecting property name enclosed in double quotes); "
            "send a JSON object",
        ),
        ("[1]", "the arguments must be a JSON object"),
        ('"text"', "the arguments must be a JSON object"),
        ("x" * (MAX_ARGUMENTS_CHARS + 1), f"the arguments are longer than {MAX_ARGUMENTS_CHARS} characters"),
    ],
)
def test_arguments_that_are_not_an_object_are_refused_in_words_the_model_can_act_on(
    arguments: str, message: str
) -> None:
    with pytest.raises(ArgumentsInvalid) as refused:
        parse_arguments(arguments)

    assert str(refused.value) == message
