"""Names of proto enum values, derived from the generated descriptors instead of written out per layer.

The contract's enums follow buf's STANDARD lint: every value starts with the enum's name in upper snake
case, and 0 is `_UNSPECIFIED`. A value's name is what follows that prefix, in lower case
(`STOP_REASON_END_TURN` <-> "end_turn"): the words the REST API, the stores and the providers use.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Generic, TypeVar, cast

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

ValueT = TypeVar("ValueT", bound=int)

_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


class EnumNames(Generic[ValueT]):
    """Value <-> name of one proto enum; `_UNSPECIFIED` has no name."""

    __slots__ = ("_names", "_values", "enum_name")

    def __init__(self, enum: _EnumTypeWrapper[ValueT]) -> None:
        descriptor = enum.DESCRIPTOR
        prefix = _WORD_START.sub("_", descriptor.name).upper() + "_"
        self.enum_name = descriptor.full_name
        self._names: dict[int, str] = {}
        self._values: dict[str, ValueT] = {}
        for value in descriptor.values:
            if not value.name.startswith(prefix):
                raise ValueError(f"{value.name} of {descriptor.full_name} does not start with {prefix}")
            if value.number == 0:
                continue
            name = value.name.removeprefix(prefix).lower()
            self._names[value.number] = name
            self._values[name] = cast(ValueT, value.number)

    @property
    def names(self) -> tuple[str, ...]:
        """Every value's name, in the order the contract declares them (`_UNSPECIFIED` left out)."""
        return tuple(self._values)

    def name(self, value: int) -> str:
        """The name of `value`; "" for `_UNSPECIFIED` and for numbers this build does not know."""
        return self._names.get(value, "")

    def value(self, name: str) -> ValueT:
        """The value named `name`; `_UNSPECIFIED` (0) for a name that is none of `names`."""
        return self._values.get(name, cast(ValueT, 0))
