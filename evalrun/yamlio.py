"""YAML for specs and model tables: safe, and strict about what YAML lets slip by silently."""

from __future__ import annotations

from typing import Any

import yaml

from evalrun.errors import SpecError

__all__ = ["load_yaml"]


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping: YAML keeps the last one,
    so a second prompt with the same name would silently replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first written on line {first + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, *, source: str) -> Any:
    """Parse YAML text; any problem is a SpecError naming `source`, the line and the column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        problem = exc.problem or str(exc)
        if problem.startswith("duplicate key"):
            raise SpecError(f"{source}: line {mark.line + 1 if mark else '?'}: {problem}") from None
        raise SpecError(f"{source}: YAML syntax error at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML ({exc})") from None
