"""Parts are chosen by name; an unknown name lists the valid ones. A part registers itself, with its own pydantic
options model (which validates the recipe's `options` before anything loads), in the file that defines it: a
registry imports every module of its package the first time it is asked, so a new part is one new file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from pydantic import BaseModel

from sgpo_data.errors import SgpoError

T = TypeVar("T")


class NoOptions(BaseModel):
    model_config = {"extra": "forbid"}


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind, self.package = kind, package
        self._factories: dict[str, Callable[..., T]] = {}
        self._options: dict[str, type[BaseModel]] = {}
        self._discovered = package is None

    def _discover(self) -> None:
        """Import every module of the package once, so each registers its parts (heavy libraries stay inside
        the functions that use them)."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

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
        self._discover()
        return sorted(self._factories)

    def check(self, name: str, key: str | None = None) -> None:
        self._discover()
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
