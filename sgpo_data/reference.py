"""The recipe reference, generated from the pydantic models so it cannot drift from them: every section's keys
with their types, defaults and descriptions, the rules checked when a recipe loads, and each registered part's
options. `python -m sgpo_data.reference docs/reference/recipe.md` rewrites the page; a test checks it is current.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from sgpo_data.config import REGISTRIES, Part, Recipe, registry

HEADER = """# Recipe reference

Generated from the recipe's pydantic models by `python -m sgpo_data.reference docs/reference/recipe.md`; do not
edit by hand. A recipe is YAML; any key can be overridden with `--set section.key=value` (the value is parsed as
YAML). Unknown keys are refused, and every rule below is checked when the recipe loads, before any data or model
loads. A *part* (a backend, grader, segmenter, judge or view) is written `{name: ..., options: {...}}`, or by its
name alone; its options are listed under [Parts](#parts).
"""


def _type(annotation) -> str:
    """A field's type as a reader writes it: `int`, `a | b`, `list[str]`, `part`, `section`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("null" if a is type(None) else _type(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, Part):
        return f"[{annotation.kind}](#{annotation.kind}s)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list) and value and isinstance(value[0], Part):
        return "`[" + ", ".join(v.name for v in value) + "]`"
    if isinstance(value, Part):
        return f"`{value.name}`"
    if isinstance(value, BaseModel):
        return "see below"
    text = "null" if value is None else repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _rules(model: type[BaseModel]) -> list[str]:
    """The first docstring line of each of the model's validators: the rule it enforces, in a user's words."""
    decorators = model.__pydantic_decorators__
    found = [*decorators.field_validators.values(), *decorators.model_validators.values()]
    return [" ".join(d.func.__doc__.strip().split("\n\n")[0].split()) for d in found if d.func.__doc__]


def _table(model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> tuple[list[str], list]:
    """The model's keys as a table, and its sub-sections to render after it."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kinds = [a for a in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(a, type) and issubclass(a, BaseModel) and not issubclass(a, Part)]
        if kinds:
            nested.append((f"{prefix}.{name}", kinds[0]))
        description = (field.description or "").replace("|", "\\|")
        if (field.json_schema_extra or {}).get("operational"):
            description += " (operational: changing it never redoes a stage)"
        lines.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {description} |")
    return lines, nested


def _section(model: type[BaseModel], key: str, level: int = 2) -> list[str]:
    lines = [f"{'#' * level} `{key}`", ""]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__ and not model.__doc__.startswith("!!!"):
        lines += [" ".join(model.__doc__.split()), ""]
    table, nested = _table(model, key)
    lines += table + [""]
    if rules := _rules(model):
        lines += ["Checked when the recipe loads:", "", *(f"- {rule}" for rule in rules), ""]
    for sub_key, sub_model in nested:
        lines += _section(sub_model, sub_key, min(level + 1, 4))
    return lines


def _builtin(kind: str) -> list[str]:
    """The parts sgpo-data ships (a part another module registers is left out of the page)."""
    parts = registry(kind)
    return [n for n in parts.names() if parts.factory(n).__module__.startswith("sgpo_data.")]


def _parts() -> list[str]:
    lines = ["## Parts", ""]
    for kind in REGISTRIES:
        parts = registry(kind)
        lines += [f"### {kind}s", ""]
        for name in _builtin(kind):
            model = parts.options_model(name)
            lines += [f"#### {kind} `{name}`", ""]
            doc = (parts.factory(name).__doc__ or "").strip()
            if doc:
                lines += [" ".join(doc.split("\n\n")[0].split()), ""]
            if model.model_fields:
                lines += _table(model, name)[0] + [""]
            else:
                lines += ["No options.", ""]
            if rules := _rules(model):
                lines += ["Checked when the recipe loads:", "", *(f"- {rule}" for rule in rules), ""]
    return lines


def recipe_reference() -> str:
    lines = [HEADER]
    for name, field in Recipe.model_fields.items():
        lines += _section(field.annotation, name)
    if rules := _rules(Recipe):
        lines += ["## Rules across sections", "", *(f"- {rule}" for rule in rules), ""]
    lines += _parts()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    text = recipe_reference()
    if target is None:
        sys.stdout.write(text)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
