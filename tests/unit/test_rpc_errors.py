"""Domain errors survive the trip through a gRPC status with its rich details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mnemo_core import errors
from mnemo_core.errors import ERROR_DOMAIN, FieldViolation
from mnemo_core.rpc_errors import DETAILS_KEY, from_rpc_error, status_code_of, to_trailing_metadata

CODES: list[tuple[type[errors.MnemoError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Internal, grpc.StatusCode.INTERNAL),
]


def rpc_error(
    code: grpc.StatusCode, details: str | None, trailing: tuple[tuple[str, str | bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    """The error a grpc.aio client raises for a failed call, built by hand."""
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*trailing),
        details=details,
    )


def through_the_wire(error: errors.MnemoError) -> errors.MnemoError:
    return from_rpc_error(rpc_error(status_code_of(error), error.message, to_trailing_metadata(error)))


@pytest.mark.parametrize(("cls", "code"), CODES, ids=[cls.__name__ for cls, _ in CODES])
def test_each_domain_error_has_its_own_grpc_status_code(
    cls: type[errors.MnemoError], code: grpc.StatusCode
) -> None:
    assert status_code_of(cls("boom")) == code


def test_subclass_of_a_domain_error_maps_to_its_parents_code_and_the_base_class_to_unknown() -> None:
    class BlockTooLong(errors.InvalidArgument):
        pass

    assert status_code_of(BlockTooLong("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_of(errors.MnemoError("x")) == grpc.StatusCode.UNKNOWN


@pytest.mark.parametrize(("cls", "code"), CODES, ids=[cls.__name__ for cls, _ in CODES])
def test_round_trip_keeps_class_message_reason_metadata_and_violations(
    cls: type[errors.MnemoError], code: grpc.StatusCode
) -> None:
    original = cls(
        "block 'human' would hold 11 characters",
        reason="SOME_REASON",
        metadata={"label": "human", "limit": "10"},
        violations=[FieldViolation("blocks[1].value", "too long"), FieldViolation("blocks[2].label", "bad")],
    )

    rebuilt = through_the_wire(original)

    assert type(rebuilt) is cls
    assert rebuilt.message == original.message
    assert rebuilt.reason == "SOME_REASON"
    assert rebuilt.metadata == {"label": "human", "limit": "10"}
    assert rebuilt.violations == original.violations


def test_round_trip_of_an_error_without_extras_keeps_its_default_reason() -> None:
    rebuilt = through_the_wire(errors.NotFound("agent agent-1 not found"))

    assert isinstance(rebuilt, errors.NotFound)
    assert rebuilt.reason == "NOT_FOUND"
    assert rebuilt.metadata == {}
    assert rebuilt.violations == []


def test_trailing_metadata_carries_a_google_rpc_status_with_error_info_and_bad_request() -> None:
    error = errors.InvalidArgument("bad", reason="R", metadata={"k": "v"}).with_violation("f", "d")

    ((key, value),) = to_trailing_metadata(error)
    status = status_pb2.Status.FromString(value)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(bad)

    assert key == DETAILS_KEY
    assert (status.code, status.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "bad")
    assert (info.reason, info.domain, dict(info.metadata)) == ("R", ERROR_DOMAIN, {"k": "v"})
    assert [(v.field, v.description) for v in bad.field_violations] == [("f", "d")]


def test_error_without_violations_sends_no_bad_request_detail() -> None:
    ((_, value),) = to_trailing_metadata(errors.NotFound("gone"))

    status = status_pb2.Status.FromString(value)

    assert len(status.details) == 1
    assert status.details[0].Is(error_details_pb2.ErrorInfo.DESCRIPTOR)


def test_status_without_details_from_a_peer_becomes_the_matching_error_with_default_reason() -> None:
    rebuilt = from_rpc_error(rpc_error(grpc.StatusCode.PERMISSION_DENIED, "nope", (("other-key", "x"),)))

    assert isinstance(rebuilt, errors.PermissionDenied)
    assert rebuilt.message == "nope"
    assert rebuilt.reason == "PERMISSION_DENIED"


def test_unavailable_without_details_means_the_service_itself_is_unavailable() -> None:
    rebuilt = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, None))

    assert isinstance(rebuilt, errors.Unavailable)
    assert rebuilt.reason == "SERVICE_UNAVAILABLE"
    assert rebuilt.message == "UNAVAILABLE"


def test_unavailable_with_a_reason_keeps_that_reason() -> None:
    rebuilt = through_the_wire(errors.Unavailable("provider down", reason="PROVIDER_UNAVAILABLE"))

    assert rebuilt.reason == "PROVIDER_UNAVAILABLE"


def test_unknown_status_becomes_an_internal_error() -> None:
    rebuilt = from_rpc_error(rpc_error(grpc.StatusCode.UNKNOWN, "exception in handler"))

    assert isinstance(rebuilt, errors.Internal)
    assert rebuilt.message == "exception in handler"


def test_with_violation_adds_to_the_violations_and_returns_the_same_error() -> None:
    error = errors.InvalidArgument("bad", violations=[FieldViolation("a", "1")])

    same = error.with_violation("b", "2")

    assert same is error
    assert error.violations == [FieldViolation("a", "1"), FieldViolation("b", "2")]
    assert repr(error) == "InvalidArgument('bad', reason='INVALID_ARGUMENT')"
