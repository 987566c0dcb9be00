"""
Services: what a plugin author writes.

    class Calculator(Service):
        name = "calc"

        @exported
        def add(self, a: int, b: int) -> int:
            return a + b

Only methods marked L{exported} are reachable; each must annotate every
parameter and its return type with plain data types (L{appnpy_rpc.data}).
A parameter annotated L{Caller} is not sent by the caller: the callee fills it
with who is calling, through which it can call back.
"""

from __future__ import annotations

import contextvars
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from appnpy_rpc import data
from appnpy_rpc.errors import BAD_ARGUMENTS, RPCError

#: A service name: the part after C{rpc:} of its resource name.
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}\Z")
#: A method name.
METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
#: Longest docstring line sent in C{describe}.
MAX_DOC = 256

F = TypeVar("F", bound=Callable[..., Any])

#: The depth of the call a handler is serving; calls made while it runs
#: (through any session) carry one more.  Coroutine handlers keep it
#: across awaits (Deferred.fromCoroutine runs them in a copied context).
currentDepth: contextvars.ContextVar[int] = contextvars.ContextVar("appnpy_rpc_depth", default=0)


def exported(f: F) -> F:
    """
    Mark a method of a L{Service} as callable by peers.
    """
    f.__rpc_exported__ = True  # type: ignore[attr-defined]
    return f


class RemoteCaller(Protocol):
    """
    What a handler can do with its L{Caller}: call the peer back.
    """

    def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Any: ...


@attrs.define(eq=False)
class Caller:
    """
    Who is calling, handed to a handler that declares a parameter of this
    type.

    @ivar peerNodeID: the calling node, authenticated by TLS.
    @ivar peerName: its CP name.
    @ivar connection: the RPC session with it; C{caller.call(...)} calls a
        service the caller exposes on that session (a callback).
    @ivar depth: the depth of this call in a chain of nested calls.
    """

    peerNodeID: str
    peerName: str
    connection: RemoteCaller
    depth: int

    def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """
        Call C{service.method} on the calling peer (a service it exposed on
        this session, or one its node offers); a Deferred.  The call
        carries this call's depth plus one, however late it is made.
        """
        token = currentDepth.set(self.depth)
        try:
            return self.connection.call(service, method, *args, **kwargs)
        finally:
            currentDepth.reset(token)


class Service:
    """
    Base class of an RPC service: set C{name}, mark methods with
    L{exported}.

    Override L{authorize} to choose who may call: it is asked before every
    call from a peer, with the caller's authenticated node ID.
    """

    name: ClassVar[str] = ""

    def authorize(self, peerNodeID: str, method: str) -> bool:
        """
        Whether the node C{peerNodeID} may call C{method}; a call refused
        here is answered C{not-authorized} and never reaches the handler.
        Everyone may, unless a subclass says otherwise.
        """
        return True


@attrs.frozen
class Param:
    name: str
    type: data.Descriptor
    optional: bool

    def toWire(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "optional": self.optional}


@attrs.define(slots=False)
class MethodSpec:
    """
    One method's signature, as sent in C{describe} and checked on both sides.
    """

    name: str
    params: list[Param]
    returns: data.Descriptor
    doc: str = ""
    checkers: list[data.Checker] = attrs.field(init=False, repr=False)
    checkResult: data.Checker = attrs.field(init=False, repr=False)
    records: dict[str, type] | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self.checkers = [data.compile(p.type, self.records) for p in self.params]
        # Results travel (and reach the caller) as plain data: no records built.
        self.checkResult = data.compile(self.returns)
        checkResult = self.checkResult
        #: One-argument form, for the caller's pending call.
        self.checkAnswer = lambda value: checkResult(value, "result")
        self._byName = {p.name: i for i, p in enumerate(self.params)}
        self._required = sum(1 for p in self.params if not p.optional)
        # Fast path: every parameter required, no records to build.
        self._simple = all(not p.optional for p in self.params)

    def checkArguments(
        self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """
        Check C{args} and C{kwargs} (wire data) against the parameters;
        answer them checked (records built when this side has the classes).

        @raise RPCError: C{bad-arguments}, saying what is wrong.
        """
        params = self.params
        checkers = self.checkers
        n = len(args)
        if not kwargs and n == len(params):
            try:
                return [checkers[i](args[i], params[i].name) for i in range(n)], kwargs
            except data.Mismatch as e:
                raise RPCError(BAD_ARGUMENTS, f"{self.name}: {e}") from None
        if n > len(params):
            raise RPCError(BAD_ARGUMENTS, f"{self.name} takes {len(params)} arguments, {n} given")
        try:
            outArgs = [checkers[i](args[i], params[i].name) for i in range(n)]
            outKwargs = {}
            given = set(range(n))
            for key, value in kwargs.items():
                i = self._byName.get(key)
                if i is None:
                    raise RPCError(BAD_ARGUMENTS, f"{self.name} has no parameter {key[:64]!r}")
                if i in given:
                    raise RPCError(BAD_ARGUMENTS, f"{self.name}: {key} given twice")
                given.add(i)
                outKwargs[key] = checkers[i](value, key)
        except data.Mismatch as e:
            raise RPCError(BAD_ARGUMENTS, f"{self.name}: {e}") from None
        missing = [p.name for i, p in enumerate(params) if not p.optional and i not in given]
        if missing:
            raise RPCError(BAD_ARGUMENTS, f"{self.name}: missing {', '.join(missing)}")
        return outArgs, outKwargs

    def toWire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": [p.toWire() for p in self.params],
            "returns": self.returns,
            "doc": self.doc,
        }

    @classmethod
    def fromWire(cls, value: Any) -> MethodSpec:
        """
        A signature a peer described.

        @raise data.Mismatch: if it is malformed.
        """
        if not isinstance(value, dict):
            raise data.Mismatch("a method is a map")
        name, params, doc = value.get("name"), value.get("params"), value.get("doc", "")
        if not isinstance(name, str) or not METHOD_NAME.match(name):
            raise data.Mismatch("bad method name")
        if not isinstance(params, list) or len(params) > data.MAX_MEMBERS:
            raise data.Mismatch(f"{name}: params must be a list of at most 64")
        if not isinstance(doc, str):
            raise data.Mismatch(f"{name}: doc must be text")
        parsed = []
        for p in params:
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise data.Mismatch(f"{name}: a parameter is a map with a name")
            optional = p.get("optional", False)
            if not isinstance(optional, bool):
                raise data.Mismatch(f"{name}: optional must be a bool")
            parsed.append(Param(p["name"][:64], data.parseDescriptor(p.get("type")), optional))
        return cls(name, parsed, data.parseDescriptor(value.get("returns")), doc[:MAX_DOC])

    def format(self) -> str:
        """
        The signature as a person reads it: C{add(a: int, b: int) -> int}.
        """
        params = ", ".join(
            f"{p.name}: {data.formatType(p.type)}" + (" = ..." if p.optional else "")
            for p in self.params
        )
        return f"{self.name}({params}) -> {data.formatType(self.returns)}"


@attrs.define
class ExportedMethod:
    """
    A method of a local service: its signature, the bound callable and the
    name of its L{Caller} parameter, if it has one.
    """

    spec: MethodSpec
    function: Callable[..., Any]
    callerParam: str | None


@attrs.define
class ServiceSpec:
    """
    A local service: its name and exported methods.
    """

    name: str
    instance: object
    methods: dict[str, ExportedMethod]
    #: The instance's authorize(peerNodeID, method), if it has one.
    authorize: Callable[[str, str], bool] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "methods": [m.spec.toWire() for m in self.methods.values()],
        }


def _methodSpec(name: str, function: Callable[..., Any]) -> ExportedMethod:
    try:
        hints = typing.get_type_hints(function)
    except Exception as e:
        raise data.UnsupportedType(f"{name}: cannot resolve annotations: {e}") from None
    signature = inspect.signature(function)
    records: dict[str, type] = {}
    params = []
    callerParam = None
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY, p.KEYWORD_ONLY):
            raise data.UnsupportedType(
                f"{name}: parameter {p.name} must be an ordinary (positional or keyword) one"
            )
        if p.name not in hints:
            raise data.UnsupportedType(f"{name}: parameter {p.name} has no annotation")
        if hints[p.name] is Caller:
            callerParam = p.name
            continue
        try:
            desc = data.describeType(hints[p.name], records)
        except data.UnsupportedType as e:
            raise data.UnsupportedType(f"{name}: parameter {p.name}: {e}") from None
        params.append(Param(p.name, desc, p.default is not p.empty))
    if "return" not in hints:
        raise data.UnsupportedType(f"{name}: no return annotation")
    returns = hints["return"]
    # An async handler's annotation is what it finally returns.
    try:
        resultDesc = data.describeType(returns, records)
    except data.UnsupportedType as e:
        raise data.UnsupportedType(f"{name}: return type: {e}") from None
    doc = (inspect.getdoc(function) or "").strip().split("\n", 1)[0][:MAX_DOC]
    spec = MethodSpec(name, params, resultDesc, doc, records=records or None)
    return ExportedMethod(spec, function, callerParam)


def inspectService(instance: object) -> ServiceSpec:
    """
    The exported methods of a service instance, with their signatures.

    @raise ValueError: if the name is missing or bad, or a method's
        annotations are not plain data (naming the method and parameter).
    """
    name = getattr(instance, "name", "")
    if not isinstance(name, str) or not SERVICE_NAME.match(name):
        raise ValueError(f"service name {name!r} must be 1-64 of a-z 0-9 - starting with a letter")
    methods = {}
    for attr in dir(type(instance)):
        function = getattr(type(instance), attr, None)
        if not getattr(function, "__rpc_exported__", False):
            continue
        if not METHOD_NAME.match(attr):
            raise ValueError(f"{name}: method name {attr!r} is not allowed")
        bound = getattr(instance, attr)
        try:
            methods[attr] = _methodSpec(attr, bound)
        except data.UnsupportedType as e:
            raise ValueError(f"service {name}: {e}") from None
    if not methods:
        raise ValueError(f"service {name} exports no method (mark them with @exported)")
    authorize = getattr(instance, "authorize", None)
    if authorize is not None and getattr(type(instance), "authorize", None) is Service.authorize:
        authorize = None  # the default allows everyone: skip the call
    return ServiceSpec(name, instance, methods, authorize if callable(authorize) else None)


def describedService(value: Any) -> tuple[str, dict[str, MethodSpec]]:
    """
    Parse a service description a peer sent.

    @raise data.Mismatch: if it is malformed.
    """
    if not isinstance(value, dict):
        raise data.Mismatch("a service description is a map")
    name, methods = value.get("service"), value.get("methods")
    if not isinstance(name, str) or not isinstance(methods, list):
        raise data.Mismatch("a service description has a name and a list of methods")
    if len(methods) > 1024:
        raise data.Mismatch("a service describes at most 1024 methods")
    specs = {}
    for m in methods:
        spec = MethodSpec.fromWire(m)
        specs[spec.name] = spec
    return name, specs
