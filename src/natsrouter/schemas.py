"""JSON Schemas shipped with the package, and error paths people can read.

One loader and one path formatter for every schema-checked document (policies, messages), so
"which field" reads the same everywhere: ``providers[1].weight``, ``task.type``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match


def validator(package: str, name: str) -> Draft202012Validator:
    """A validator for the schema file ``name`` shipped in ``package``."""
    schema = json.loads(resources.files(package).joinpath(name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def field_path(error: ValidationError) -> str:
    """``a.b[2].c`` for the place an error is about; ``(document)`` for the root."""
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".") or "(document)"


def first_error(checker: Draft202012Validator, document: Any) -> ValidationError | None:
    """The most relevant violation, or None when the document is valid."""
    error: ValidationError | None = best_match(checker.iter_errors(document))
    return error
