"""Typed events: instances of registered classes travel as themselves between eventservice clients.

Register a class once, in the publisher and in every subscriber (``register_type(Quote)``,
or ``@register_type`` on the class). Dataclasses and namedtuples need nothing else; any
other class gives a ``to_dict`` and a ``from_dict``. (An unregistered namedtuple is a
tuple, and arrives as a plain tuple.)

On the wire a registered instance is a plain dict: its fields plus the key
``"__es_type__"`` (:data:`TYPE_KEY`) holding the registered name, with field values encoded
the same way (a registered instance may hold others, in fields, lists, tuples and dict
values). So the service, ``es listen``, content filters and plain Pyro5 clients see an
ordinary dict, and the fast (marshal) path between eventservice's own parts still applies.
The ``Publisher``/``Subscriber`` classes and their asyncio faces turn such a dict back into
the class, if the receiving process registered its name; otherwise it stays a dict.

Publishing a value that holds an instance of a class nobody registered (a dataclass, or any
class the serializer would send as an anonymous object the service cannot decode) raises
``TypeError`` in the caller before anything is sent.

Decoding is lenient about versions: keys the class does not know are ignored, fields that
are missing take their defaults; a dict that still cannot become the class (a required
field missing) is left a dict and a warning is logged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar, overload

from ._compat import pyro5 as _pyro5, serpent as _serpent

log = logging.getLogger(__name__)

TYPE_KEY = "__es_type__"  # the key naming the registered type in a dict on the wire

T = TypeVar("T")
ToDict = Callable[[Any], Dict[str, Any]]
FromDict = Callable[[Dict[str, Any]], Any]

_SCALARS = frozenset((type(None), bool, int, float, str, bytes, bytearray, complex))


class _Codec:
    __slots__ = ("name", "cls", "to_dict", "from_dict")

    def __init__(self, name: str, cls: type, to_dict: ToDict, from_dict: FromDict) -> None:
        self.name = name
        self.cls = cls
        self.to_dict = to_dict
        self.from_dict = from_dict


_lock = threading.Lock()
_by_class: Dict[type, _Codec] = {}
_by_name: Dict[str, _Codec] = {}
_allowed: Dict[type, bool] = {}  # other classes found sendable as they are (cache)


@overload
def register_type(cls: Type[T], name: Optional[str] = None, *, to_dict: Optional[ToDict] = None,
                  from_dict: Optional[FromDict] = None) -> Type[T]: ...


@overload
def register_type(cls: None = None, name: Optional[str] = None, *, to_dict: Optional[ToDict] = None,
                  from_dict: Optional[FromDict] = None) -> Callable[[Type[T]], Type[T]]: ...


def register_type(cls: Optional[type] = None, name: Optional[str] = None, *, to_dict: Optional[ToDict] = None,
                  from_dict: Optional[FromDict] = None) -> Any:
    """Let instances of ``cls`` travel as themselves; returns ``cls`` (usable as a decorator,
    with or without arguments: ``@register_type`` or ``@register_type(name="quote")``).

    ``name`` (default: the class's ``__qualname__``) is what travels; publisher and
    subscribers must register the class under the same name. A dataclass or a namedtuple
    needs no more; another class gives ``to_dict(obj) -> dict`` and ``from_dict(dict) ->
    obj`` (often ``to_dict=vars, from_dict=lambda d: Cls(**d)``). Registering
    the same class again is harmless; a second class under a name already taken raises
    ``ValueError`` (pass ``name=`` to tell them apart). Thread-safe."""
    if cls is None:
        return lambda real: register_type(real, name, to_dict=to_dict, from_dict=from_dict)
    if not isinstance(cls, type):
        raise TypeError(f"register_type() takes a class, not {type(cls).__name__}")
    if name is None:
        name = cls.__qualname__
    if not isinstance(name, str) or not name:
        raise TypeError("the name of a type must be a non-empty str")
    if (to_dict is None) != (from_dict is None):
        raise TypeError("give both to_dict and from_dict, or neither (for a dataclass)")
    if to_dict is None:
        if _is_namedtuple(cls):
            to_dict, from_dict = _namedtuple_codec(cls)
        elif dataclasses.is_dataclass(cls):
            to_dict, from_dict = _dataclass_codec(cls)
        else:
            raise TypeError(f"{cls.__qualname__} is not a dataclass nor a namedtuple: give to_dict and from_dict, "
                            f"e.g. {_register_line(cls)}")
    assert from_dict is not None
    with _lock:
        taken = _by_name.get(name)
        if taken is not None and taken.cls is not cls and not _same_class(taken.cls, cls):
            raise ValueError(f"the type name {name!r} is taken by {taken.cls.__module__}.{taken.cls.__qualname__}: "
                             f"register {cls.__qualname__} with another name=")
        old = _by_class.get(cls)
        if old is not None and old.name != name:
            del _by_name[old.name]
        if taken is not None:
            _by_class.pop(taken.cls, None)
        codec = _Codec(name, cls, to_dict, from_dict)
        _by_class[cls] = codec
        _by_name[name] = codec
        _allowed.clear()
    return cls


def unregister_type(cls: type) -> None:
    """Forget ``cls`` (mostly for tests). Unknown classes are ignored."""
    with _lock:
        codec = _by_class.pop(cls, None)
        if codec is not None and _by_name.get(codec.name) is codec:
            del _by_name[codec.name]


def registered_types() -> Dict[str, type]:
    """The registered names and their classes."""
    with _lock:
        return {name: codec.cls for name, codec in _by_name.items()}


def _same_class(a: type, b: type) -> bool:
    """Two class objects of one definition (a module imported twice, or reloaded)."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _dataclass_codec(cls: type) -> Tuple[ToDict, FromDict]:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    init_names = frozenset(f.name for f in fields if f.init)
    later = tuple(f.name for f in fields if not f.init)

    def to_dict(obj: Any) -> Dict[str, Any]:
        return {name: getattr(obj, name) for name in names}

    def from_dict(data: Dict[str, Any]) -> Any:
        obj = cls(**{k: v for k, v in data.items() if k in init_names})
        for name in later:
            if name in data:
                object.__setattr__(obj, name, data[name])  # frozen dataclasses too
        return obj

    return to_dict, from_dict


def _is_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple) and hasattr(cls, "_asdict")


def _namedtuple_codec(cls: Any) -> Tuple[ToDict, FromDict]:
    fields = frozenset(cls._fields)

    def to_dict(obj: Any) -> Dict[str, Any]:
        return dict(obj._asdict())

    def from_dict(data: Dict[str, Any]) -> Any:
        return cls(**{k: v for k, v in data.items() if k in fields})

    return to_dict, from_dict


def _register_line(cls: type) -> str:
    """The line that registers ``cls`` (where its name is in scope)."""
    name = cls.__qualname__
    if dataclasses.is_dataclass(cls) or _is_namedtuple(cls):
        return f"eventservice.register_type({name})"
    return f"eventservice.register_type({name}, to_dict=vars, from_dict=lambda d: {name}(**d))"


# -- encoding (publishers) ----------------------------------------------------------------------
def encode(msg: Any) -> Any:
    """``msg`` with every registered instance turned into its wire dict (the same object when
    it holds none). ``TypeError`` for an instance of a class nobody registered."""
    t = type(msg)
    if t in _SCALARS:
        return msg
    if t is dict:
        scalars = _SCALARS
        for key, value in msg.items():
            if type(value) not in scalars or type(key) not in scalars:
                return _encode(msg, 0)
        return msg
    return _encode(msg, 0)


MAX_DEPTH = 200  # nesting levels walked before giving up (the serializer refuses deeper values too)


def _encode(value: Any, depth: int) -> Any:
    t = type(value)
    if t in _SCALARS:
        return value
    if depth > MAX_DEPTH:
        raise ValueError("message nested too deeply")
    codec = _by_class.get(t)
    if codec is not None:
        data = codec.to_dict(value)
        if not isinstance(data, dict):
            raise TypeError(f"to_dict of {codec.name!r} must return a dict, not {type(data).__name__}")
        wire = {TYPE_KEY: codec.name}
        for key, item in data.items():
            wire[key] = _encode(item, depth + 1)
        return wire
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, item in value.items():
            _check_hashable_part(key, depth)
            new = _encode(item, depth + 1)
            changed = changed or new is not item
            out[key] = new
        return out if changed else value
    if isinstance(value, (list, tuple)):
        items = [_encode(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        for item in value:
            _check_hashable_part(item, depth)
        return value
    _check_sendable(value)
    return value


def _check_hashable_part(value: Any, depth: int) -> None:
    """Set members and dict keys cannot hold typed instances (their wire form is a dict)."""
    if type(value) in _SCALARS:
        return
    if type(value) in _by_class:
        raise TypeError(f"a {type(value).__qualname__} cannot travel as a dict key or in a set "
                        f"(its wire form is a dict): use a list")
    if isinstance(value, tuple):
        for item in value:
            _check_hashable_part(item, depth + 1)
    elif not isinstance(value, (frozenset, str, bytes)):
        _check_sendable(value)


def _check_sendable(value: Any) -> None:
    """TypeError for an object the serializer would send as an anonymous class, which the
    service cannot decode: an unregistered dataclass, or any class Pyro5 knows nothing of."""
    t = type(value)
    if _allowed.get(t):
        return
    if dataclasses.is_dataclass(value):
        raise TypeError(f"cannot publish a {t.__module__}.{t.__qualname__}: it is a dataclass nobody "
                        f"registered; register it in the publisher and in every subscriber: {_register_line(t)}")
    if _known_to_serializer(t, value):
        _allowed[t] = True
        return
    raise TypeError(f"cannot publish a {t.__module__}.{t.__qualname__}: the Event Service could not decode "
                    f"it; register it in the publisher and in every subscriber, e.g. {_register_line(t)} "
                    f"(or send plain data: dict, list, str, numbers)")


def _known_to_serializer(t: type, value: Any) -> bool:
    """True for types Pyro5's serializers carry as values the service can decode."""
    dispatch = _serpent.dispatched_types()
    if dispatch is None:
        return True  # cannot tell: let the serializer decide
    if any(base in dispatch for base in t.__mro__):
        return True
    return any(isinstance(value, cls) for cls in _serpent.special_classes() + _pyro5.dict_classes())


def type_name(msg: Any) -> Optional[str]:
    """The registered name ``msg`` travels under: that of its class, or the name in its wire
    dict (registered here or not); None for anything else."""
    if type(msg) is dict:
        name = msg.get(TYPE_KEY)
        return name if type(name) is str else None
    codec = _by_class.get(type(msg))
    return None if codec is None else codec.name


# -- decoding (subscribers) ---------------------------------------------------------------------
def decoder() -> Optional[Callable[[Any], Any]]:
    """:func:`decode`, or None while no type is registered (nothing to do then)."""
    return decode if _by_name else None


def decode(msg: Any) -> Any:
    """``msg`` with every wire dict of a registered name turned back into its class (the
    same object when it holds none)."""
    t = type(msg)
    if t in _SCALARS:
        return msg
    if t is dict and TYPE_KEY not in msg:
        scalars = _SCALARS
        for value in msg.values():
            if type(value) not in scalars:
                return _decode(msg, 0)
        return msg
    return _decode(msg, 0)


def _decode(value: Any, depth: int) -> Any:
    t = type(value)
    if t in _SCALARS or depth > MAX_DEPTH:
        return value
    if t is dict:
        name = value.get(TYPE_KEY)
        if type(name) is str:
            codec = _by_name.get(name)
            if codec is not None:
                return _build(codec, value, depth)
        changed = False
        out = {}
        for key, item in value.items():
            new = _decode(item, depth + 1)
            changed = changed or new is not item
            out[key] = new
        return out if changed else value
    if t is list or t is tuple:
        items = [_decode(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return items if t is list else tuple(items)
    return value


def _build(codec: _Codec, wire: Dict[str, Any], depth: int) -> Any:
    data = {key: _decode(item, depth + 1) for key, item in wire.items() if key != TYPE_KEY}
    try:
        return codec.from_dict(data)
    except Exception as exc:
        log.warning("an event of type %r could not become a %s (%s): left as a dict",
                    codec.name, codec.cls.__qualname__, exc)
        return dict(data, **{TYPE_KEY: codec.name})

