"""Which executor honours which scenario field: the SimPy model, the real engine, or both.

One scenario file drives two executors: the simulator (``simulator.model``) and the real
asyncio gateway with its emulated upstreams (``real_engine``).  A field means the same
thing to both unless its schema entry says otherwise: ``Field(json_schema_extra=only(
"real", "why the simulator ignores it"))``.  A field without a declaration is honoured
by both; the fields of a table declared for one executor belong to that executor too.

``unmodelled`` is what ``gwsim run`` and ``gwsim measure`` warn about: the fields a
scenario *sets* (present in the file or given with ``--set``, at a value other than the
field's default) that the chosen executor ignores.  A scenario that leaves such a field
at its default, or writes the default out, gets no warning: both executors then behave
the same.  The machine profile (``profile = ...``) is not the scenario setting anything:
the values it fills in are for the simulator and are not looked at here.  Fields that
tell one executor how to run (``run.replications``, ``profile``, ``machine``) are declared
with ``warn=False``: the reference shows them as one-sided, but setting them is no warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from simulator.distributions import _Dist

Executor = Literal["simulator", "real"]
#: Who may honour a field: both executors (the default), the simulator only, the real engine only.
EXECUTORS = ("both", "simulator", "real")
#: How messages name an executor.
EXECUTOR_NAMES = {"simulator": "the simulator", "real": "the real engine"}
_KEY = "executors"
_REASON = "executors_reason"
_WARN = "executors_warn"


def only(executor: Executor, reason: str, *, warn: bool = True) -> dict[str, Any]:
    """The ``json_schema_extra`` of a field only ``executor`` honours; ``reason`` says why the other ignores it.

    ``warn=False`` for a field that tells one executor *how to run* rather than describing
    the gateway (replications, the machine profile): the other executor ignores it by
    design, so a scenario that sets it is not warned about on every run."""
    extra: dict[str, Any] = {_KEY: executor, _REASON: reason}
    if not warn:
        extra[_WARN] = False
    return extra


@dataclass(frozen=True)
class Declaration:
    """Who honours a field, and (when only one executor does) why the other does not."""

    executors: str = "both"
    reason: str = ""
    warn: bool = True  # False: ignored by design (how to run one executor), not worth a warning

    def honoured_by(self, executor: str) -> bool:
        return self.executors in ("both", executor)

    @property
    def ignored_by(self) -> str | None:
        """The executor that ignores the field (None when both honour it)."""
        return {"simulator": "real", "real": "simulator"}.get(self.executors)


BOTH = Declaration()


def declaration(field: FieldInfo) -> Declaration:
    """A field's own declaration (``both`` when it has none); ValueError when it is malformed."""
    extra = field.json_schema_extra
    if not isinstance(extra, dict) or _KEY not in extra:
        return BOTH
    executors, reason = extra[_KEY], extra.get(_REASON, "")
    if executors not in EXECUTORS:
        raise ValueError(f"expected executors from {list(EXECUTORS)}, got {executors!r}")
    if executors != "both" and not (isinstance(reason, str) and reason.strip()):
        raise ValueError(f"expected a reason why only the {executors} executor honours it, got none")
    return Declaration(executors, reason if executors != "both" else "", bool(extra.get(_WARN, True)))


def effective(field: FieldInfo, table: Declaration) -> Declaration:
    """A field's declaration where its table is declared ``table``: its own, or the table's."""
    own = declaration(field)
    return own if own.executors != "both" else table


@dataclass(frozen=True)
class Unmodelled:
    """A field the scenario sets that ``executor`` ignores."""

    source: str  # the scenario file
    path: str  # TOML key path, as error messages write it: endpoints.chat.classes[0].similarity_hit
    executor: str  # the executor that ignores it: simulator or real
    reason: str

    def message(self) -> str:
        return f"{self.source}: {self.path} is not modelled by {EXECUTOR_NAMES[self.executor]} ({self.reason})"


def unmodelled(path: str | Path, overrides: list[str] | tuple[str, ...], executor: Executor) -> list[Unmodelled]:
    """The fields the scenario at ``path`` (with ``--set`` ``overrides``) sets that ``executor`` ignores.

    A field counts when its key is in the file or an override and its value differs from
    the schema's default for it; the fields of a table count one by one.  Bad input raises
    ``ScenarioError`` as loading the scenario would.
    """
    from simulator.scenario import apply_overrides, read_scenario_data, scenario_from_data

    if executor not in EXECUTOR_NAMES:
        raise ValueError(f"expected executor 'simulator' or 'real', got {executor!r}")
    path = Path(path)
    source = str(path)
    data = apply_overrides(read_scenario_data(path), list(overrides), source)
    # validated without the machine profile: what the profile adds is not the scenario's setting
    scenario = scenario_from_data(data, source, path.parent)
    found: list[Unmodelled] = []
    _table(scenario, data, (), BOTH, executor, source, found)
    return found


def _table(model: BaseModel, raw: Any, loc: tuple[Any, ...], decl: Declaration, executor: str, source: str, out: list[Unmodelled]) -> None:
    if not isinstance(raw, dict):
        return
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if key not in raw:
            continue  # left at its default (or filled in by the profile)
        value = getattr(model, name)
        if not field.is_required() and value == field.get_default(call_default_factory=True):
            continue
        _value(value, raw[key], (*loc, key), effective(field, decl), executor, source, out)


def _value(value: Any, raw: Any, loc: tuple[Any, ...], decl: Declaration, executor: str, source: str, out: list[Unmodelled]) -> None:
    from simulator.scenario import _join_loc  # the key-path style of every scenario message

    if isinstance(value, BaseModel) and not isinstance(value, _Dist):
        _table(value, raw, loc, decl, executor, source, out)
        return
    tables = isinstance(value, (tuple, dict)) and any(isinstance(v, BaseModel) and not isinstance(v, _Dist) for v in _items(value))
    if tables:
        if isinstance(value, dict) and isinstance(raw, dict):
            for k, v in value.items():
                if k in raw:
                    _value(v, raw[k], (*loc, k), decl, executor, source, out)
        elif isinstance(value, tuple) and isinstance(raw, list):
            for i, v in enumerate(value):
                if i < len(raw):
                    _value(v, raw[i], (*loc, i), decl, executor, source, out)
        return
    if not decl.honoured_by(executor) and decl.warn:
        out.append(Unmodelled(source, _join_loc(loc), executor, decl.reason))


def _items(value: Any) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else list(value)
