"""Parts are chosen by name; an unknown name lists the valid ones. A part may register its own pydantic
options model, which validates the recipe's `<part>_options` / `options` mapping before anything loads."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from pydantic import BaseModel

from sgpo_data.errors import SgpoError

T = TypeVar("T")


class NoOptions(BaseModel):
    model_config = {"extra": "forbid"}


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._options: dict[str, type[BaseModel]] = {}

    def register(self, name: str, options: type[BaseModel] | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            self._options[name] = options or NoOptions
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Forget `name` (a test's own part, once the test is done)."""
        self._factories.pop(name, None)
        self._options.pop(name, None)

    def factory(self, name: str) -> Callable[..., T]:
        self.check(name)
        return self._factories[name]

    def options_model(self, name: str) -> type[BaseModel]:
        self.check(name)
        return self._options[name]

    def names(self) -> list[str]:
        return sorted(self._factories)

    def check(self, name: str, key: str | None = None) -> None:
        if name not in self._factories:
            where = f"{key}: " if key else ""
            raise SgpoError(f"{where}unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")

    def options(self, name: str, values: dict | None = None, key: str = "options") -> BaseModel:
        """The part's options model filled from `values`; a bad key names `key.<field>`."""
        from sgpo_data.config import validate_options

        self.check(name)
        return validate_options(self._options[name], values or {}, key)

    def get(self, name: str, **kwargs) -> T:
        self.check(name)
        return self._factories[name](**kwargs)
