"""Reading a topology: the file within its limits, `--set` overrides, relative paths, named profiles, then the
schema and the checks. Every problem found is raised at once as a ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from testbed.base import files
from testbed.base.keypaths import format_key_path, parse_key_path
from testbed.config import bounds
from testbed.config.checks import cross_checks
from testbed.config.errors import ConfigError, Problem
from testbed.config.schema import BUILTIN_DATASETS, Topology
from testbed.domain import hardware, profiles


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set key.path=value`; the value is parsed as YAML (3 -> int)."""
    if "=" not in assignment:
        raise ValueError(f"--set {assignment!r}: expected key.path=value")
    key, text = assignment.split("=", 1)
    parts = parse_key_path(key.strip())
    if len(parts) > files.MAX_YAML_DEPTH:
        raise ValueError(f"--set: a key path of {len(parts)} parts; allowed: at most {files.MAX_YAML_DEPTH}")
    try:
        value = files.load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"--set {key}: not valid YAML: {e}") from None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ValueError(f"--set {key}: {format_key_path(parts[: i + 1])} does not exist")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {format_key_path(parts[:i])} is not a mapping")
        if part not in node or node[part] is None:
            node[part] = [] if isinstance(nxt, int) else {}
        # A single device group may be written as a mapping: devices.count=...
        if part == "devices" and isinstance(node[part], list) and not isinstance(nxt, int):
            if len(node[part]) != 1:
                raise ValueError(f"--set {key}: there are several device groups; use devices[N]")
            node = node[part][0]
            continue
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ValueError(f"--set {key}: index {last} does not exist")
    elif not isinstance(node, dict):
        raise ValueError(f"--set {key}: {format_key_path(parts[:-1])} is not a mapping")
    node[last] = value


PATH_KEYS = ("weights", "image_dir", "uplink_trace", "downlink_trace", "uplink_delay_trace", "downlink_delay_trace",
             "light", "heavy", "csv", "hardware")


def _resolve_paths(node: Any, base: Path) -> None:
    """Relative file paths in a topology are relative to the topology file."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in PATH_KEYS and isinstance(v, str) and not Path(v).is_absolute() \
                    and (k != "hardware" or hardware.is_file(v)):
                try:
                    node[k] = str((base / v).resolve())
                except (OSError, ValueError):  # e.g. a NUL byte: left as written, for _path_problem to report
                    pass
            else:
                _resolve_paths(v, base)
    elif isinstance(node, list):
        for v in node:
            _resolve_paths(v, base)


def _resolve_train_data(raw: dict[str, Any], base: Path) -> None:
    """`train.data` is a path too, unless it names a built-in data set."""
    train = raw.get("train")
    data = train.get("data") if isinstance(train, dict) else None
    if isinstance(train, dict) and isinstance(data, str) and data not in BUILTIN_DATASETS \
            and not Path(data).is_absolute():
        try:
            train["data"] = str((base / data).resolve())
        except (OSError, ValueError):  # e.g. a NUL byte: left as written, for _train_problems to report
            pass


def _merge(base: dict[str, Any], over: Any) -> Any:
    """Field-by-field override of a built-in profile (non-mappings replace)."""
    if not isinstance(over, dict):
        return over
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) else v
    return out


def _with_profiles(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    if isinstance(out.get("devices"), dict):  # one group written as a mapping
        out["devices"] = [out["devices"]]
    for key, builtin in (("networks", profiles.NETWORKS), ("device_classes", profiles.DEVICE_CLASSES)):
        user = out.get(key) or {}
        if not isinstance(user, dict):
            continue  # left for the validator to report
        merged = {name: copy.deepcopy(p) for name, p in builtin.items()}
        for name, p in user.items():
            merged[name] = _merge(merged[name], p) if name in merged else p
            if key == "networks":
                _apply_radio_profile(merged[name], p)
        out[key] = merged
    return out


def _apply_radio_profile(network: Any, user: Any) -> None:
    """A network's radio with a `profile` named by the user: that profile's RRC values, then the user's own keys."""
    radio, own = (x.get("radio") if isinstance(x, dict) else None for x in (network, user))
    if not isinstance(radio, dict) or not isinstance(own, dict) or not isinstance(own.get("profile"), str):
        return  # no profile named here (or not a name: left for the validator to report)
    preset = profiles.RADIO_PROFILES.get(str(radio.get("technology")), {}).get(own["profile"])
    if isinstance(preset, dict):  # an unknown name is left for the validator to report with what is allowed
        network["radio"] = {**radio, **copy.deepcopy(preset), **own}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk the model classes along an error location, for 'allowed keys' hints."""
    cls: Any = Topology
    for part in loc:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            # a dict key (network name) or a list index: look through container types
            continue
        cls = _unwrap(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args or ():
        found = _unwrap(arg)
        if found is not None:
            return found
    meta = getattr(annotation, "__origin__", None)
    return _unwrap(meta) if meta not in (None, annotation) else None


def _problems_from(err: ValidationError) -> list[Problem]:
    problems = []
    errors = [(tuple(p for p in e["loc"] if not _union_tag(p)), e) for e in err.errors()]
    for loc, e in errors:
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error" and any(other[:len(loc)] == loc and len(other) > len(loc)
                                                for other, _ in errors):
            continue  # a union of a literal and a list: the list member's error says more
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see docs"
            msg = f"unknown key; allowed keys here: {allowed}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        problems.append(Problem(format_key_path(loc), msg, e.get("input"), e["type"] != "missing"))
    return problems


def _union_tag(part: Any) -> bool:
    """pydantic names the union member it tried in the error's path (`int`, `list[...]`); not a key."""
    return isinstance(part, str) and (part in ("int", "float", "str", "none", "bool") or "[" in part
                                      or part.startswith(("function-", "literal")))


def load_topology(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Topology:
    """Read, override, merge profiles, validate. Raises ConfigError listing every problem."""
    path = Path(path)
    file = str(path)
    if problem := files.file_problem(file, files.MAX_TOPOLOGY_BYTES):
        raise ConfigError(file, [Problem("", f"cannot read the file: {problem}")])
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(file, [Problem("", f"cannot read the file: {getattr(e, 'strerror', None) or e}")]) from None
    try:
        raw = files.load_yaml(text)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: the limits (files.YamlLimit), an int of 5,000 digits
        raise ConfigError(file, [Problem(getattr(e, "path", ""), f"not valid YAML: {e}")]) from None
    return topology_from_dict(raw, overrides, file, path.parent)


def topology_from_dict(raw: Any, overrides: list[str] | tuple[str, ...] = (), file: str = "<dict>",
                       base: Path | None = None) -> Topology:
    """The same overrides, profiles and checks as a file (testbed.api passes a dict); `raw` is not modified.
    Relative paths are read from `base` (the topology file's folder; the working folder for a dict)."""
    if not isinstance(raw, dict):
        raise ConfigError(file, [Problem("", "the file must hold a mapping of keys", raw, True)])
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        try:
            apply_override(raw, assignment)
        except ValueError as e:
            raise ConfigError(file, [Problem("", str(e))]) from None
    base = Path.cwd() if base is None else base
    _resolve_paths(raw, base)
    _resolve_train_data(raw, base)
    try:
        topo = Topology.model_validate(_with_profiles(raw))
    except ValidationError as e:
        raise ConfigError(file, _problems_from(e)) from None
    # bounds first: the cross checks build the device table and the pools' slices
    problems = [Problem(k, m, v, True) for k, m, v in bounds.topology_problems(topo)] or cross_checks(topo)
    if problems:
        raise ConfigError(file, problems)
    return topo
