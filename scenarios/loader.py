"""Reading scenario files: YAML in, a validated `Scenario` or a `ScenarioError` out.

A bad file fails before anything starts, with one line per problem naming the file, the line,
the field path and the rule broken::

    scenarios/postgres-outage.yaml:6: faults[1].attributes.jitter: must be >= 0 (got -5)

Duplicate keys in a mapping are an error here (plain YAML keeps the last one silently, which
would drop a whole `faults:` list without a word).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from scenarios.schema import TOXIC_ATTRIBUTES, TOXICS, Scenario

__all__ = [
    "Problem",
    "ScenarioError",
    "catalog_dir",
    "list_catalog",
    "load_scenario",
    "load_scenario_text",
    "parse_scenario",
    "resolve_scenario_path",
    "scenario_hash",
    "validate_files",
]

StrPath = str | os.PathLike[str]
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: `field` is a path such as ``faults[1].attributes.jitter`` (empty for
    the document as a whole); `line` is 1-based, when the source was YAML text."""

    field: str
    message: str
    line: int | None = None


class ScenarioError(Exception):
    """A scenario that cannot be used. `str()` gives one line per problem, each naming the
    source (usually a file), the line when known, the field path and the rule broken."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(_render(source, problem) for problem in self.problems))

    @property
    def fields(self) -> tuple[str, ...]:
        """The field paths of the problems, in order."""
        return tuple(problem.field for problem in self.problems)


def _render(source: str, problem: Problem) -> str:
    where = source if problem.line is None else f"{source}:{problem.line}"
    field = f"{problem.field}: " if problem.field else ""
    return f"{where}: {field}{problem.message}"


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    first_seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first_seen.get(key)
        except TypeError:  # an unhashable key; the base constructor reports it
            break
        if earlier is not None:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first on line {earlier.start_mark.line + 1})",
                key_node.start_mark,
            )
        first_seen[key] = key_node
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> tuple[object, yaml.Node | None]:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = str(error.problem or error.context or "unreadable")
        if error.problem and error.context:
            detail += f" ({error.context})"
        raise ScenarioError(source, [Problem("", f"not valid YAML: {detail}", line)]) from None
    except yaml.YAMLError as error:
        raise ScenarioError(source, [Problem("", f"not valid YAML: {error}")]) from None
    finally:
        loader.dispose()
    return data, node


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The line of the deepest node on `loc`'s path (for a missing key, its mapping)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    line = key_node.start_mark.line + 1
                    child = value_node
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


# --------------------------------------------------------------------------------------------
# Validation errors → problems
# --------------------------------------------------------------------------------------------

# The choices of each tagged union's discriminator, for "missing" messages.
_DISCRIMINATOR_CHOICES = {"model": ("open", "closed"), "toxic": TOXICS}
_TOP_LEVEL_FIELDS = tuple(field.alias or name for name, field in Scenario.model_fields.items())


_ABSENT = object()


def _child(container: object, part: str | int) -> object:
    """`container[part]` for a mapping key or a list index, else `_ABSENT`."""
    if isinstance(container, Mapping):
        return container.get(part, _ABSENT)
    if isinstance(container, list | tuple) and isinstance(part, int):
        return container[part] if 0 <= part < len(container) else _ABSENT
    return _ABSENT


def _clean_loc(data: object, loc: Loc) -> Loc:
    """Drop what pydantic adds to a location that is not in the document: the tag of a tagged
    union (``load.open.rate`` → ``load.rate``) and the ``[key]`` marker of a mapping key
    (``mix.inventry_read.[key]`` → ``mix.inventry_read``)."""
    cleaned: list[str | int] = []
    current: object = data
    for position, part in enumerate(loc):
        if part == "[key]":
            continue
        child = _child(current, part)
        is_tag = (
            child is _ABSENT
            and position < len(loc) - 1
            and isinstance(current, Mapping)
            and part in current.values()
        )
        if is_tag:
            continue  # the union's tag: the value of the discriminator key in this mapping
        current = child
        cleaned.append(part)
    return tuple(cleaned)


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _value_at(data: object, loc: Loc) -> object:
    for part in loc:
        data = _child(data, part)
    return None if data is _ABSENT else data


def _message(error: ErrorDetails, loc: Loc, data: object) -> str:
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    field_name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        if len(loc) >= 3 and loc[0] == "faults" and loc[-2] == "attributes":
            toxic = _value_at(data, (*loc[:-2], "toxic"))
            allowed = TOXIC_ATTRIBUTES.get(str(toxic), ())
            takes = f"it takes {', '.join(allowed)}" if allowed else "it takes no attributes"
            return f"{field_name!r} is not an attribute of the {toxic} toxic; {takes}"
        hint = ""
        if len(loc) == 1 and isinstance(field_name, str):
            close = difflib.get_close_matches(field_name, _TOP_LEVEL_FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field {field_name!r}{hint}"
    if kind == "missing":
        return "is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        choices = ", ".join(_DISCRIMINATOR_CHOICES.get(discriminator, ()))
        if kind == "union_tag_not_found":
            return f"is required (one of: {choices})"
        return f"{ctx.get('tag')!r} is not one of: {choices}"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {_number(ctx[_BOUND_KEYS[kind]])}" + _got(error)
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "scenario_rule":
        return str(ctx["message"])
    message = error["msg"]
    # pydantic's sentences start with "Input should…"; ours are lowercase clauses.
    return message[:1].lower() + message[1:] + _got(error)


_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
_BOUND_KEYS = {
    "greater_than_equal": "ge",
    "greater_than": "gt",
    "less_than_equal": "le",
    "less_than": "lt",
}


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _got(error: ErrorDetails) -> str:
    """The offending value, when it is short enough to quote."""
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        return f" (got {value!r})"
    return ""


def _problems(error: ValidationError, data: object, root: yaml.Node | None) -> list[Problem]:
    problems: list[Problem] = []
    for details in error.errors():
        loc: Loc = tuple(details["loc"])
        ctx = details.get("ctx") or {}
        if details["type"] == "scenario_rule":
            loc = (*loc, *ctx.get("loc", ()))
        elif details["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(ctx.get("discriminator", "")).strip("'"))
        cleaned = _clean_loc(data, loc)
        message = _message(details, cleaned, data)
        problems.append(Problem(_format_loc(cleaned), message, _line_of(root, cleaned)))
    return problems


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Validate already-parsed data (a mapping, as from YAML or JSON) into a `Scenario`;
    `source` names it in errors."""
    return _validate(data, source, None)


def load_scenario_text(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario given as YAML text; `source` names it in errors."""
    data, root = _parse_yaml(text, source)
    return _validate(data, source, root)


def _validate(data: object, source: str, root: yaml.Node | None) -> Scenario:
    if not isinstance(data, Mapping):
        found = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ScenarioError(
            source, [Problem("", f"a scenario is a mapping of fields; found {found}")]
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioError(source, _problems(error, data, root)) from None


def load_scenario(path: StrPath) -> Scenario:
    """Read, parse and validate one scenario file."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ScenarioError(source, [Problem("", f"cannot read the file: {reason}")]) from None
    return load_scenario_text(text, source)


def _expand(paths: Iterable[StrPath]) -> list[Path]:
    expanded: list[Path] = []
    for path in paths:
        candidate = Path(path)
        if candidate.is_dir():
            expanded.extend(sorted([*candidate.glob("*.yaml"), *candidate.glob("*.yml")]))
        else:
            expanded.append(candidate)
    return expanded


def validate_files(paths: Iterable[StrPath]) -> list[tuple[Path, ScenarioError | None]]:
    """Validate each file (a directory stands for its ``*.yaml`` and ``*.yml`` files) and
    return every file with its error, or None when it is valid. Nothing is raised, so a caller
    can report all bad files at once; the CLI exits 2 when any error is not None."""
    results: list[tuple[Path, ScenarioError | None]] = []
    for path in _expand(paths):
        try:
            load_scenario(path)
        except ScenarioError as error:
            results.append((path, error))
        else:
            results.append((path, None))
    return results


def scenario_hash(scenario: Scenario) -> str:
    """A stable sha256 (hex) of the scenario's normalised content, for run summaries.

    Normalised: defaults filled in, durations in seconds, keys sorted — so ``30s`` and ``30``,
    or an omitted mix and the default mix written out, hash alike. The description is left out:
    rewording it does not change the experiment, and a prediction and a measurement of the
    same experiment must carry the same hash.
    """
    return hashlib.sha256(scenario.canonical_json().encode("utf-8")).hexdigest()


def catalog_dir() -> Path:
    """The folder of the shipped scenario files."""
    return Path(__file__).resolve().parent


def list_catalog() -> list[Path]:
    """The shipped scenario files, sorted by name."""
    return sorted(catalog_dir().glob("*.yaml"))


def resolve_scenario_path(reference: StrPath) -> Path:
    """A scenario file from a path, or from the name of a catalog scenario
    (``postgres-outage`` → ``<catalog>/postgres-outage.yaml``)."""
    path = Path(reference)
    if path.is_file():
        return path
    named = catalog_dir() / f"{os.fspath(reference)}.yaml"
    if path.suffix == "" and path.name == os.fspath(reference) and named.is_file():
        return named
    names = ", ".join(candidate.stem for candidate in list_catalog())
    raise ScenarioError(
        os.fspath(reference),
        [Problem("", f"no such file, nor a catalog scenario (catalog: {names})")],
    )
