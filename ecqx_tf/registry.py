"""One small registry type, used for every named concept (data sets, zoo models, methods,
LRP composites, export targets). CLI choices are read from these, so help text and errors never
drift from what exists."""
from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterator, List, Optional, Sequence, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with a clear error for unknown names.

    >>> r = Registry("data set"); r.register("a")(lambda: 1); r.get("a")()
    1
    """

    def __init__(self, kind: str, known: Optional[Sequence[str]] = None, known_in: str = ""):
        """``known``: the names this registry may hold, from a light module (``known_in``) that
        the command lines read without importing the registry's own module (which may import
        TensorFlow); registering any other name fails, so the two never drift apart."""
        self.kind = kind
        self._items: Dict[str, T] = {}
        self._known = None if known is None else tuple(known)
        self._known_in = known_in

    def register(self, name: str) -> Callable[[T], T]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if self._known is not None and name not in self._known:
            raise ValueError(
                f"{self.kind} {name!r} is not in the name table{' ' + self._known_in if self._known_in else ''} "
                f"({', '.join(self._known)}); add it there: the command lines read their choices from that table "
                "without importing TensorFlow")

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names())}"
            ) from None

    def names(self) -> List[str]:
        """The registered names, sorted (CLI choices, error messages)."""
        return sorted(self._items)

    def resolve(self, value: Any, cls: type) -> T:
        """``value`` itself when it is a ``cls`` instance, else the item registered as ``value``.

        Raises:
            TypeError: neither a str nor a ``cls`` (the message lists the registered names).
            ValueError: unknown name (lists the registered names).
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return self.get(value)
        raise TypeError(f"{self.kind} must be a str or {cls.__name__}, got {type(value).__name__}; "
                        f"registered: {', '.join(self.names())}")

    def in_order(self) -> List[str]:
        """The registered names in registration order (e.g. the docs' order of the layer table)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
