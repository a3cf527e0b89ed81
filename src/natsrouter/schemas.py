"""JSON Schemas shipped with the package, and error paths people can read.

One loader and one path formatter for every schema-checked document (policies, messages), so
"which field" reads the same everywhere: ``providers[1].weight``, ``task.type``.

Each schema is checked two ways: a compiled validator (fastjsonschema, ~7 µs for a decide
request) answers "valid?" on the hot path, and jsonschema, the reference, explains a failure.
jsonschema has the last word: a document is refused only when it finds an error.
tests/unit/test_schemas.py checks with hypothesis that the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match


class Schema:
    def __init__(self, document: dict[str, Any]) -> None:
        Draft202012Validator.check_schema(document)
        self.reference = Draft202012Validator(document)
        self._compiled: Callable[[Any], Any] = fastjsonschema.compile(document)

    def fast_valid(self, document: Any) -> bool:
        try:
            self._compiled(document)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def error(self, document: Any) -> ValidationError | None:
        """The most relevant violation, or None when the document is valid."""
        if self.fast_valid(document):
            return None
        found: ValidationError | None = best_match(self.reference.iter_errors(document))
        return found


def validator(package: str, name: str) -> Schema:
    """The schema file ``name`` shipped in ``package``."""
    return Schema(json.loads(resources.files(package).joinpath(name).read_text()))


def field_path(error: ValidationError) -> str:
    """``a.b[2].c`` for the place an error is about; ``(document)`` for the root."""
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".") or "(document)"
