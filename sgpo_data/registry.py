"""Parts are chosen by name; an unknown name lists the valid ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from sgpo_data.errors import SgpoError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def check(self, name: str, key: str | None = None) -> None:
        if name not in self._factories:
            where = f"{key}: " if key else ""
            raise SgpoError(f"{where}unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")

    def get(self, name: str, **kwargs) -> T:
        self.check(name)
        return self._factories[name](**kwargs)
