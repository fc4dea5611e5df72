"""cereal's portable binary archive, both ways, as OpenFHE writes it with `Serialize(obj, BINARY)`.

Written by hand because no Python library reads cereal: its binary form is the values without names, in the order
of the C++ `save` functions, plus cereal's bookkeeping (a class version the first time each class is written, shared
pointer ids, polymorphic type names). One `Archive` class reads and writes, so the object schema in
privmesh.fhe.gpu.serial is written once and serves both directions (as cereal's own `serialize` functions do).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

T = TypeVar("T")

NEW_POINTER = 0x80000000  # a pointer id with this bit set is followed by the object; without it, refers back
STATIC_TYPE = 0x40000000  # the polymorphic id of a pointer whose object has the pointer's own type
NULL = 0
MAX_BYTES = 1 << 34  # no OpenFHE object we read is larger (a 2^17 ring, 60 towers, 10 keys is far below)


class FormatError(ValueError):
    """The bytes are not the OpenFHE object this module expects (truncated, other layout, values out of range)."""


class Archive:
    """A cursor over bytes being read, or a buffer being written (`data is None`)."""

    def __init__(self, data: bytes | None = None) -> None:
        self.reading = data is not None
        self._data = memoryview(data) if data is not None else memoryview(b"")
        self._pos = 0
        self._out: list[bytes] = []
        self._versions: set[str] = set()
        self._polymorphic: dict[str, int] = {}  # type name -> id (writing); id -> name kept in _names (reading)
        self._names: dict[int, str] = {}
        self._objects: dict[int, Any] = {}  # pointer id -> object (reading)
        self._ids: dict[int, int] = {}  # id(object) -> pointer id (writing)
        self._keep: list[Any] = []  # objects whose id() is in _ids stay alive while the archive is written
        if self.reading:
            if self.u8() != 1:
                raise FormatError("not a little-endian cereal portable binary archive")
        else:
            self.u8(1)

    # --- primitives -------------------------------------------------------------------------------------------
    def _take(self, size: int) -> memoryview:
        if size < 0 or self._pos + size > len(self._data):
            raise FormatError(f"truncated: {size} bytes wanted at offset {self._pos}")
        chunk = self._data[self._pos:self._pos + size]
        self._pos += size
        return chunk

    def _scalar(self, fmt: str, value: Any) -> Any:
        packer = struct.Struct("<" + fmt)
        if self.reading:
            return packer.unpack(self._take(packer.size))[0]
        self._out.append(packer.pack(value))
        return value

    def u8(self, value: int = 0) -> int:
        return int(self._scalar("B", value))

    def u32(self, value: int = 0) -> int:
        return int(self._scalar("I", value))

    def i32(self, value: int = 0) -> int:
        return int(self._scalar("i", value))

    def u64(self, value: int = 0) -> int:
        return int(self._scalar("Q", value))

    def f32(self, value: float = 0.0) -> float:
        return float(self._scalar("f", value))

    def f64(self, value: float = 0.0) -> float:
        return float(self._scalar("d", value))

    def size(self, value: int = 0, limit: int = MAX_BYTES) -> int:
        """A container's length, checked against `limit` before anything is allocated."""
        found = self.u64(value)
        if found > limit:
            raise FormatError(f"a length of {found} exceeds {limit}")
        return found

    def string(self, value: str = "") -> str:
        raw = value.encode()
        size = self.size(len(raw), limit=1 << 16)
        if self.reading:
            try:
                return bytes(self._take(size)).decode()
            except UnicodeDecodeError:
                raise FormatError("a string is not UTF-8") from None
        self._out.append(raw)
        return value

    def words(self, value: NDArray[np.uint64] | None = None, limit: int = 1 << 20) -> NDArray[np.uint64]:
        """A vector of uint64 (a polynomial's residues)."""
        if self.reading:
            count = self.size(limit=limit)
            return np.frombuffer(self._take(8 * count), dtype="<u8").astype(np.uint64)
        assert value is not None
        self.size(len(value))
        self._out.append(np.ascontiguousarray(value, dtype="<u8").tobytes())
        return value

    def sequence(self, items: list[T] | None, item: Callable[[T | None], T], limit: int = 1 << 16) -> list[T]:
        count = self.size(len(items) if items is not None else 0, limit=limit)
        if self.reading:
            return [item(None) for _ in range(count)]
        assert items is not None
        return [item(x) for x in items]

    # --- cereal bookkeeping -----------------------------------------------------------------------------------
    def version(self, type_name: str, expected: int = 0) -> None:
        """The class version cereal writes before the first object of each class."""
        if type_name in self._versions:
            return
        self._versions.add(type_name)
        found = self.u32(expected)
        if found != expected:
            raise FormatError(f"{type_name} has class version {found}, this reader knows {expected}")

    def polymorphic(self, type_name: str | None) -> str | None:
        """A pointer's polymorphic header: None for a null pointer, else the object's registered type name
        (`type_name` "" for a pointer whose object has the pointer's own type)."""
        if self.reading:
            pid = self.u32()
            if pid == NULL:
                return None
            if pid == STATIC_TYPE:
                return ""
            if pid & NEW_POINTER:
                name = self.string()
                self._names[pid & ~NEW_POINTER] = name
                return name
            if pid not in self._names:
                raise FormatError(f"polymorphic id {pid} was never named")
            return self._names[pid]
        if type_name is None:
            self.u32(NULL)
        elif type_name == "":
            self.u32(STATIC_TYPE)
        elif type_name in self._polymorphic:
            self.u32(self._polymorphic[type_name])
        else:
            self._polymorphic[type_name] = len(self._polymorphic) + 1
            self.u32(self._polymorphic[type_name] | NEW_POINTER)
            self.string(type_name)
        return type_name

    def shared(self, obj: T | None, body: Callable[[T | None], T]) -> T:
        """A shared pointer's id, then the object the first time it is written (`body` reads or writes it)."""
        if self.reading:
            pid = self.u32()
            if pid & NEW_POINTER:
                value = body(None)
                self._objects[pid & ~NEW_POINTER] = value
                return value
            if pid not in self._objects:
                raise FormatError(f"pointer id {pid} refers to no earlier object")
            return self._objects[pid]  # type: ignore[no-any-return]
        assert obj is not None
        key = id(obj)
        if key in self._ids:
            self.u32(self._ids[key])
            return obj
        self._ids[key] = len(self._ids) + 1
        self._keep.append(obj)
        self.u32(self._ids[key] | NEW_POINTER)
        return body(obj)

    def unique(self, obj: Any, body: Callable[[Any], T]) -> T:
        """A unique pointer: a validity byte, then the object (never null in what OpenFHE writes here)."""
        if self.u8(1) != 1:
            raise FormatError("a null unique pointer")
        return body(obj)

    # --- results ----------------------------------------------------------------------------------------------
    def done(self) -> None:
        if self.reading and self._pos != len(self._data):
            raise FormatError(f"{len(self._data) - self._pos} bytes left after the object")

    def getvalue(self) -> bytes:
        return b"".join(self._out)
