"""
The data an RPC carries, and the type descriptors of method signatures.

Arguments and results are plain CBOR data: C{int} (-2**64 .. 2**64-1),
C{float}, C{str}, C{bytes}, C{bool}, C{None}, lists and maps with text keys;
an attrs class whose fields are such data travels as a map of its fields.

A method's annotations become I{type descriptors}, themselves plain data so
that C{describe} can send them (docs/protocol.md, section 20.5):

    "int" "float" "str" "bytes" "bool" "none" "any"
    {"list": T}   {"dict": T}   {"union": [T, ...]}
    {"record": "Point", "fields": [["x", T], ...]}   (fields in order)

L{compile} turns a descriptor into a checking function.  The same function
checks on both sides: the caller before sending, the callee before calling
(where it also turns record maps back into attrs instances).
"""

from __future__ import annotations

import types as _pytypes
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from appnpy_rpc.errors import BAD_ARGUMENTS, RPCError

Descriptor = Any
Checker = Callable[[Any, str], Any]

INT_MIN = -(2**64)
INT_MAX = 2**64 - 1
#: Deepest descriptor accepted from a peer, and deepest data nesting.
MAX_DEPTH = 32
#: At most this many union members, record fields or parameters from a peer.
MAX_MEMBERS = 64

_SCALARS: dict[Any, str] = {
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    bool: "bool",
    type(None): "none",
    None: "none",
}
_NAMES = frozenset(_SCALARS.values()) | {"any"}


class Mismatch(Exception):
    """
    A value does not fit a descriptor; the message names where and why.
    """


class UnsupportedType(TypeError):
    """
    An annotation names a type that RPC cannot carry.
    """


# -- annotations to descriptors -------------------------------------------------


def describeType(tp: Any, records: dict[str, type] | None = None, depth: int = 0) -> Descriptor:
    """
    The descriptor of annotation C{tp}; attrs classes met on the way are
    added to C{records} by name.

    @raise UnsupportedType: for anything RPC cannot carry.
    """
    if depth > MAX_DEPTH:
        raise UnsupportedType("type nested too deeply")
    if tp in _SCALARS:
        return _SCALARS[tp]
    if tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is list or origin is list:
        return {"list": describeType(args[0], records, depth + 1) if args else "any"}
    if tp is dict or origin is dict:
        if args and args[0] is not str:
            raise UnsupportedType(f"map keys must be str, not {args[0]!r}")
        return {"dict": describeType(args[1], records, depth + 1) if args else "any"}
    if origin is typing.Union or origin is _pytypes.UnionType:
        return {"union": [describeType(a, records, depth + 1) for a in args]}
    if isinstance(tp, type) and attrs.has(tp):
        attrs.resolve_types(tp)
        fields = [[f.name, describeType(f.type, records, depth + 1)] for f in attrs.fields(tp)]
        if records is not None:
            known = records.get(tp.__name__)
            if known is not None and known is not tp:
                raise UnsupportedType(f"two record types are called {tp.__name__}")
            records[tp.__name__] = tp
        return {"record": tp.__name__, "fields": fields}
    raise UnsupportedType(
        f"{tp!r} is not plain data (int, float, str, bytes, bool, None, list, dict, attrs class)"
    )


def formatType(desc: Descriptor) -> str:
    """
    A descriptor as a person reads it: C{list[int]}, C{Point{x: int}}...
    """
    if isinstance(desc, str):
        return "None" if desc == "none" else desc
    if "list" in desc:
        return f"list[{formatType(desc['list'])}]"
    if "dict" in desc:
        return f"dict[str, {formatType(desc['dict'])}]"
    if "union" in desc:
        return " | ".join(formatType(d) for d in desc["union"])
    fields = ", ".join(f"{k}: {formatType(v)}" for k, v in desc["fields"])
    return f"{desc['record']}{{{fields}}}"


# -- descriptors from a peer ------------------------------------------------------


def parseDescriptor(value: Any, depth: int = 0) -> Descriptor:
    """
    Check a descriptor a peer sent (C{describe}); answer it unchanged.

    @raise Mismatch: if it is not a well-formed descriptor.
    """
    if depth > MAX_DEPTH:
        raise Mismatch("type descriptor nested too deeply")
    if isinstance(value, str):
        if value not in _NAMES:
            raise Mismatch(f"unknown type {value[:32]!r}")
        return value
    if not isinstance(value, dict):
        raise Mismatch("a type descriptor is a name or a map")
    if len(value) == 1 and ("list" in value or "dict" in value):
        (inner,) = value.values()
        parseDescriptor(inner, depth + 1)
        return value
    if len(value) == 1 and "union" in value:
        members = value["union"]
        if not isinstance(members, list) or not 0 < len(members) <= MAX_MEMBERS:
            raise Mismatch("a union lists 1 to 64 types")
        for m in members:
            parseDescriptor(m, depth + 1)
        return value
    if set(value) == {"record", "fields"}:
        fields = value["fields"]
        if not isinstance(value["record"], str) or not isinstance(fields, list):
            raise Mismatch("a record has a text name and a list of fields")
        if len(fields) > MAX_MEMBERS:
            raise Mismatch("a record has at most 64 fields")
        names = set()
        for field in fields:
            if not isinstance(field, list) or len(field) != 2 or not isinstance(field[0], str):
                raise Mismatch("a record field is [name, type]")
            if field[0] in names:
                raise Mismatch(f"record field {field[0][:32]!r} named twice")
            names.add(field[0])
            parseDescriptor(field[1], depth + 1)
        return value
    raise Mismatch("unknown type descriptor")


# -- checking ------------------------------------------------------------------


def _where(path: str) -> str:
    return path or "value"


def checkPlain(value: Any, path: str = "", depth: int = 0) -> None:
    """
    Check that C{value} is plain data (after L{toWire}).

    @raise Mismatch: naming the first part that is not.
    """
    t = type(value)
    if t is str or t is bytes or t is bool or t is float or value is None:
        return
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise Mismatch(f"{_where(path)}: integer out of the 64-bit range CBOR carries")
        return
    if depth >= MAX_DEPTH:
        raise Mismatch(f"{_where(path)}: nested more than {MAX_DEPTH} deep")
    if t is list:
        for i, item in enumerate(value):
            checkPlain(item, f"{path}[{i}]", depth + 1)
        return
    if t is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise Mismatch(f"{_where(path)}: map keys must be str, not {type(k).__name__}")
            checkPlain(item, f"{path}[{k!r}]", depth + 1)
        return
    raise Mismatch(f"{_where(path)}: {t.__name__} is not plain data")


def toWire(value: Any, path: str = "", depth: int = 0) -> Any:
    """
    C{value} as plain data: attrs instances become maps of their fields,
    tuples become lists; everything else must already be plain.

    @raise Mismatch: for anything that is not plain data.
    """
    t = type(value)
    if t is int or t is str or t is float or t is bytes or t is bool or value is None:
        if t is int and not INT_MIN <= value <= INT_MAX:
            raise Mismatch(f"{_where(path)}: integer out of the 64-bit range CBOR carries")
        return value
    if depth >= MAX_DEPTH:
        raise Mismatch(f"{_where(path)}: nested more than {MAX_DEPTH} deep")
    if t is list or t is tuple:
        return [toWire(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise Mismatch(f"{_where(path)}: map keys must be str, not {type(k).__name__}")
            out[k] = toWire(v, f"{path}[{k!r}]", depth + 1)
        return out
    if attrs.has(t):
        return {
            f.name: toWire(getattr(value, f.name), f"{path}.{f.name}", depth + 1)
            for f in attrs.fields(t)
        }
    raise Mismatch(f"{_where(path)}: {t.__name__} is not plain data")


def compile(desc: Descriptor, records: Mapping[str, type] | None = None) -> Checker:  # noqa: A001
    """
    A function C{check(value, path)} that answers C{value} if it fits
    C{desc} (record maps turned into instances of C{records}' classes when
    given) or raises L{Mismatch}.  C{desc} must be well formed.
    """
    if isinstance(desc, str):
        return _SCALAR_CHECKERS[desc]
    if "list" in desc:
        item = compile(desc["list"], records)
        if item is _checkAny:
            return _checkListAny

        def checkList(value: Any, path: str) -> Any:
            if type(value) is not list:
                raise Mismatch(f"{_where(path)}: expected a list, got {type(value).__name__}")
            return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return checkList
    if "dict" in desc:
        item = compile(desc["dict"], records)

        def checkDict(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise Mismatch(f"{_where(path)}: expected a map, got {type(value).__name__}")
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise Mismatch(f"{_where(path)}: map keys must be str")
                out[k] = item(v, f"{path}[{k!r}]")
            return out

        return checkDict
    if "union" in desc:
        members = [compile(d, records) for d in desc["union"]]
        text = formatType(desc)

        def checkUnion(value: Any, path: str) -> Any:
            for member in members:
                try:
                    return member(value, path)
                except Mismatch:
                    pass
            raise Mismatch(f"{_where(path)}: expected {text}, got {type(value).__name__}")

        return checkUnion
    name = desc["record"]
    fields = {k: compile(v, records) for k, v in desc["fields"]}
    cls = records.get(name) if records is not None else None

    def checkRecord(value: Any, path: str) -> Any:
        if type(value) is not dict:
            raise Mismatch(f"{_where(path)}: expected a {name} map, got {type(value).__name__}")
        if value.keys() != fields.keys():
            missing = sorted(fields.keys() - value.keys())
            extra = sorted(str(k) for k in value.keys() - fields.keys())
            raise Mismatch(
                f"{_where(path)}: {name} needs fields {sorted(fields)}"
                + (f", missing {missing}" if missing else "")
                + (f", unknown {extra[:8]}" if extra else "")
            )
        checked = {k: fields[k](v, f"{path}.{k}") for k, v in value.items()}
        return cls(**checked) if cls is not None else checked

    return checkRecord


def _scalar(kind: type, name: str) -> Checker:
    def check(value: Any, path: str) -> Any:
        if type(value) is not kind:
            raise Mismatch(f"{_where(path)}: expected {name}, got {type(value).__name__}")
        return value

    return check


def _checkInt(value: Any, path: str) -> Any:
    if type(value) is not int:
        raise Mismatch(f"{_where(path)}: expected int, got {type(value).__name__}")
    if not INT_MIN <= value <= INT_MAX:
        raise Mismatch(f"{_where(path)}: integer out of the 64-bit range CBOR carries")
    return value


def _checkFloat(value: Any, path: str) -> Any:
    # An int is accepted where a float is declared, as Python's typing does.
    t = type(value)
    if t is float:
        return value
    if t is int and INT_MIN <= value <= INT_MAX:
        return value
    raise Mismatch(f"{_where(path)}: expected float, got {t.__name__}")


def _checkNone(value: Any, path: str) -> Any:
    if value is not None:
        raise Mismatch(f"{_where(path)}: expected None, got {type(value).__name__}")
    return value


def _checkAny(value: Any, path: str) -> Any:
    checkPlain(value, path)
    return value


def _checkListAny(value: Any, path: str) -> Any:
    if type(value) is not list:
        raise Mismatch(f"{_where(path)}: expected a list, got {type(value).__name__}")
    checkPlain(value, path)
    return value


_SCALAR_CHECKERS: dict[str, Checker] = {
    "int": _checkInt,
    "float": _checkFloat,
    "str": _scalar(str, "str"),
    "bytes": _scalar(bytes, "bytes"),
    "bool": _scalar(bool, "bool"),
    "none": _checkNone,
    "any": _checkAny,
}


def badArguments(e: Mismatch) -> RPCError:
    return RPCError(BAD_ARGUMENTS, str(e))
