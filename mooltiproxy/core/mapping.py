"""What mappers hand the engine and each other: payloads that say how they are sent (Streamed,
FanOut), and the typed notes a request mapper leaves for the answer mapper of the same request."""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload


class FanOut(list):
    """Returned by a request mapper: send each payload upstream, in parallel.

    The answer mapper then receives a FanOut of the parsed answers, in the same order, and
    `context.answer_headers` holds each answer's headers.
    """


class Streamed(dict):
    """Returned by a request mapper: send this payload to the endpoint's stream path and translate
    the answer's events with the answer mapper's `stream_translator`."""


T = TypeVar("T")
D = TypeVar("D")
T_co = TypeVar("T_co", covariant=True)


class Note(Generic[T_co]):
    """A typed key of a request's notes, as aiohttp's RequestKey: `STOPS = Note[list[str]]("stops")`.
    Each key is its own object, so two modules' notes never collide, whatever their names."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Note({self.name!r})"


class Notes:
    """What a request mapper leaves for the answer mapper of the same request, by typed key."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[Note[Any], Any] = {}

    def __setitem__(self, key: Note[T], value: T) -> None:
        self._values[key] = value

    def __getitem__(self, key: Note[T]) -> T:
        value: T = self._values[key]
        return value

    def __contains__(self, key: Note[Any]) -> bool:
        return key in self._values

    @overload
    def get(self, key: Note[T]) -> T | None: ...

    @overload
    def get(self, key: Note[T], default: D) -> T | D: ...

    def get(self, key: Note[Any], default: Any = None) -> Any:
        return self._values.get(key, default)

    def clear(self) -> None:
        self._values.clear()
