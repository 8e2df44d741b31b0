"""Page sizes and tokens, text checks and ids: the input rules every service shares."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from mnemo_core.errors import InvalidArgument
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


# --- page sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "effective"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (50, 50), (999, 999), (1000, 1000), (1001, 1000), (2**31 - 1, 1000)],
)
def test_page_size_zero_means_the_default_and_large_sizes_are_capped_at_1000(
    requested: int, effective: int
) -> None:
    assert page_size(requested) == effective
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)


def test_negative_page_size_is_invalid_argument_naming_page_size() -> None:
    with pytest.raises(InvalidArgument) as refused:
        page_size(-1)

    assert fields(refused.value) == ["page_size"]


# --- page tokens ---------------------------------------------------------------------------------------


def test_page_token_reads_back_the_position_it_was_encoded_from() -> None:
    token = encode_token("blocks", t="2024-01-01T00:00:00+00:00", i="ünïcode / block", s=42)

    position = decode_token(token, "blocks")

    assert position is not None
    assert position.time("t") == datetime(2024, 1, 1, tzinfo=UTC)
    assert position.text("i") == "ünïcode / block"
    assert position.integer("s") == 42
    assert token.isascii()
    assert "+" not in token
    assert "/" not in token


def test_empty_page_token_means_the_first_page() -> None:
    assert decode_token("", "blocks") is None


@pytest.mark.parametrize(
    "token",
    ["!!!", "a", "abc", "%%%garbage", b64(b"not json"), b64(b"\xff\xfe\xfd"), "ünï"],
    ids=["punctuation", "one-char", "bad-padding", "percent", "not-json", "not-utf8", "non-ascii"],
)
def test_garbage_page_token_is_invalid_argument_naming_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_token(token, "blocks")

    assert fields(refused.value) == ["page_token"]


@pytest.mark.parametrize("payload", [b"[1, 2]", b"42", b'"text"', b"null"])
def test_page_token_that_decodes_to_something_other_than_an_object_names_page_token(payload: bytes) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_token(b64(payload), "blocks")

    assert fields(refused.value) == ["page_token"]


def test_page_token_of_another_listing_is_refused() -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_token(encode_token("messages", s=3), "blocks")

    assert fields(refused.value) == ["page_token"]


@pytest.mark.parametrize(
    ("read", "key"),
    [("integer", "text"), ("integer", "flag"), ("text", "number"), ("time", "text"), ("text", "missing")],
)
def test_page_token_values_of_the_wrong_type_are_invalid_argument(read: str, key: str) -> None:
    position = decode_token(encode_token("blocks", text="abc", number=7, flag=True), "blocks")
    assert position is not None

    with pytest.raises(InvalidArgument) as refused:
        getattr(position, read)(key)

    assert fields(refused.value) == ["page_token"]


# --- text ----------------------------------------------------------------------------------------------


def test_check_text_returns_storable_text_unchanged() -> None:
    text = "héllo\nwörld\t🙂"

    assert check_text(text, "f", max_chars=100) is text
    assert check_text("", "f", max_chars=100) == ""
    assert check_text("x" * 100, "f", max_chars=100) == "x" * 100


def test_check_text_refuses_empty_text_when_empty_is_not_allowed() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_text("", "messages[0].user.text", max_chars=10, allow_empty=False)

    assert fields(refused.value) == ["messages[0].user.text"]
    assert refused.value.violations[0].description == "must not be empty"


@pytest.mark.parametrize("text", ["\x00", "a\x00", "\x00b", "mid\x00dle"])
def test_check_text_refuses_nul_characters_anywhere(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_text(text, "block.value", max_chars=100)

    assert fields(refused.value) == ["block.value"]
    assert "NUL" in refused.value.message


def test_check_text_refuses_text_longer_than_the_maximum_saying_both_lengths() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_text("x" * 11, "content", max_chars=10)

    assert fields(refused.value) == ["content"]
    assert "11" in refused.value.message
    assert "10" in refused.value.message


def test_check_text_counts_characters_not_bytes() -> None:
    assert check_text("é" * 10, "f", max_chars=10) == "é" * 10


def test_invalid_builds_an_invalid_argument_with_one_violation() -> None:
    error = invalid("agent_id", "required")
    custom = invalid("agent_id", "required", "agent_id is required")

    assert isinstance(error, InvalidArgument)
    assert error.message == "agent_id: required"
    assert custom.message == "agent_id is required"
    assert [(v.field, v.description) for v in error.violations] == [("agent_id", "required")]


# --- ids -----------------------------------------------------------------------------------------------


def test_new_ids_carry_their_kind_and_are_unique() -> None:
    ids = {new_id("block") for _ in range(100)}

    assert len(ids) == 100
    assert all(i.startswith("block-") and len(i) == len("block-") + 36 for i in ids)


def test_require_id_returns_the_id_or_names_the_missing_field() -> None:
    assert require_id("agent-1", "agent_id") == "agent-1"
    with pytest.raises(InvalidArgument) as refused:
        require_id("", "agent_id")

    assert fields(refused.value) == ["agent_id"]
    assert refused.value.message == "agent_id is required"
