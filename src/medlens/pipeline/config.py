"""The run configuration: a YAML file validated against a small schema with clear errors.

Example (every key shown; only ``cohort`` is required)::

    name: sts-lung-metastasis
    data_dir: null                  # base folder of the cohort paths (``--data`` overrides it)
    cohort:
      csv: cohort.csv               # relative to data_dir; or, instead:
      catalog: null                 # a MedLens catalog (DuckDB, `medlens catalog scan`) ...
      query: null                   # ... and SQL returning one row per case with the columns below;
                                    #     image: a path or a series UID of the catalog
      id_column: patient_id
      image_column: pet_image
      mask_column: pet_rtstruct     # RTSTRUCT/SEG/label image per case
      outcome: lung_metastasis      # binary 0/1 column
      clinical: []                  # further CSV columns used as predictors
      time_column: null             # survival time (with event_column: Cox / C-index)
      event_column: null
      batch_column: null            # centre/scanner for harmonisation
    mask:
      roi: GTV_Mass_PET             # exact name, or a regular expression matching one ROI
      method: null                  # instead of a mask column: a medlens.segment.segment method (otsu, ...)
      options: {}                   # keyword options of that method, e.g. {lower: -500, units: HU}
    preprocess:
      recipe: null                  # path to a preprocess recipe YAML, or the recipe itself
    radiomics:
      settings: null                # preset name, path to a settings YAML, or a mapping
      deep_features: null           # true: add deep_* features of the shipped self-supervised PET encoder
                                    # (medlens.learn.deep_features); or the path of another encoder checkpoint
    model:
      classifier: logistic          # logistic (L2) | random_forest
      folds: 5
      repeats: 5
      n_features: 10                # kept by univariate selection inside each fold
      clinical_from_dicom: [age, sex, bmi]
      harmonise: false              # true = combat (empirical Bayes) | location-scale; per batch, fitted inside folds
      bootstrap: 1000
      permutations: 100
      calibration_bins: 5
      seed: 0
    execution:
      workers: null                 # null: one per core; 1: synchronous, no Dask
      memory_limit: 2GB             # per Dask worker
      scheduler: null               # tcp://host:port of an existing Dask cluster
    output:
      dir: runs/sts                 # relative to the config file's folder

Several modalities per case (one row per case, features and lineage prefixed by the modality name)::

    modalities:                     # instead of cohort.image_column / mask_column and mask.roi
      pet:                          # the name is the column prefix: pet_stat_max, pet_series_uid, ...
        image_column: pet_image     # a CSV column, or instead
        image: null                 # a path template of CSV columns, e.g. "{patient_id}/MR_T1/image"
        mask_column: pet_rtstruct   # (or mask: a template)
        roi: GTV_Mass_PET
        preprocess: null            # a recipe for this modality (default: preprocess.recipe)
        radiomics: null             # settings for this modality (default: radiomics.settings)
        deep_features: null         # as radiomics.deep_features, for this modality (default: that value)
        required: true              # false: a case without this series gets empty columns for it
    model:
      variants: {}                  # name -> list of feature groups (modality names, or "radiomics" in a
                                    # single-image run, and "clinical"), e.g.
                                    # {pet: [pet], pet+mr: [pet, mr], pet+mr+clinical: [pet, mr, clinical]}:
                                    # each compared with nested CV (medlens.learn.fusion) in the report
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError

__all__ = ["MODALITY_SCHEMA", "SCHEMA", "RunConfig", "load_config", "settings_hash", "validate_config"]

# type spec: a tuple of allowed Python types; "choices" for enumerations; "schema" for sub-mappings.
_STR = (str,)
_OPT_STR = (str, type(None))
_INT = (int,)
_BOOL = (bool,)
_LIST_STR = (list,)

#: One entry of ``modalities`` (see the module docstring).
MODALITY_SCHEMA: dict[str, Any] = {
    "image_column": {"types": _OPT_STR, "default": None},
    "image": {"types": _OPT_STR, "default": None},
    "mask_column": {"types": _OPT_STR, "default": None},
    "mask": {"types": _OPT_STR, "default": None},
    "roi": {"types": _OPT_STR, "default": None},
    "preprocess": {"types": (str, dict, type(None)), "default": None},
    "radiomics": {"types": (str, dict, type(None)), "default": None},
    "deep_features": {"types": (bool, str, type(None)), "default": None},
    "required": {"types": _BOOL, "default": True},
}
_MODALITY_NAME = re.compile(r"^[a-z][a-z0-9]*$")

SCHEMA: dict[str, Any] = {
    "name": {"types": _STR, "default": "run"},
    "data_dir": {"types": _OPT_STR, "default": None},
    "cohort": {
        "required": True,
        "schema": {
            "csv": {"types": _OPT_STR, "default": None},
            "catalog": {"types": _OPT_STR, "default": None},
            "query": {"types": _OPT_STR, "default": None},
            "id_column": {"types": _STR, "default": "patient_id"},
            "image_column": {"types": _STR, "default": "image"},
            "mask_column": {"types": _OPT_STR, "default": "mask"},
            "outcome": {"types": _OPT_STR, "default": None},
            "clinical": {"types": _LIST_STR, "default": []},
            "time_column": {"types": _OPT_STR, "default": None},
            "event_column": {"types": _OPT_STR, "default": None},
            "batch_column": {"types": _OPT_STR, "default": None},
        },
    },
    "modalities": {"types": (dict, type(None)), "default": None},
    "mask": {
        "schema": {
            "roi": {"types": _OPT_STR, "default": None},
            "method": {"types": _OPT_STR, "default": None},
            "options": {"types": (dict,), "default": {}},
        }
    },
    "preprocess": {"schema": {"recipe": {"types": (str, dict, type(None)), "default": None}}},
    "radiomics": {
        "schema": {
            "settings": {"types": (str, dict, type(None)), "default": None},
            "deep_features": {"types": (bool, str, type(None)), "default": None},
        }
    },
    "model": {
        "schema": {
            "classifier": {"types": _STR, "choices": ("logistic", "random_forest"), "default": "logistic"},
            "folds": {"types": _INT, "min": 2, "default": 5},
            "repeats": {"types": _INT, "min": 1, "default": 5},
            "n_features": {"types": _INT, "min": 1, "default": 10},
            "clinical_from_dicom": {
                "types": _LIST_STR,
                "items": ("age", "sex", "bmi", "weight_kg", "height_m"),
                "default": ["age", "sex", "bmi"],
            },
            "harmonise": {"types": (bool, str), "choices": ("combat", "location-scale"), "default": False},
            "bootstrap": {"types": _INT, "min": 0, "default": 1000},
            "permutations": {"types": _INT, "min": 0, "max": 1000, "default": 100},
            "calibration_bins": {"types": _INT, "min": 2, "default": 5},
            "seed": {"types": _INT, "default": 0},
            "variants": {"types": (dict,), "default": {}},
        }
    },
    "execution": {
        "schema": {
            "workers": {"types": (int, type(None)), "min": 1, "default": None},
            "memory_limit": {"types": _STR, "default": "2GB"},
            "scheduler": {"types": _OPT_STR, "default": None},
        }
    },
    "output": {"schema": {"dir": {"types": _OPT_STR, "default": None}}},
}


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", bool: "true/false", list: "list", dict: "mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _validate(section: dict[str, Any], schema: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise InputError(f"{source}: {where or 'the top level'} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise InputError(
            f"{source}: unknown key {key!r}; allowed keys{' in ' + where if where else ''}: {', '.join(schema)}"
        )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        path = f"{where}.{key}" if where else key
        if key not in section:
            if spec.get("required"):
                raise InputError(f"{source}: missing required key {path!r}")
            if "schema" in spec:
                out[key] = _validate({}, spec["schema"], path, source)
            else:
                out[key] = copy.deepcopy(spec.get("default"))
            continue
        value = section[key]
        if "schema" in spec:
            out[key] = _validate(value if value is not None else {}, spec["schema"], path, source)
            continue
        types = spec["types"]
        # bool is a subclass of int: refuse true/false where an integer is expected
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InputError(
                f"{source}: key {path!r} must be {_type_names(types)}, got {type(value).__name__} {value!r}"
            )
        if "choices" in spec and not isinstance(value, bool) and value not in spec["choices"]:
            raise InputError(f"{source}: key {path!r} is {value!r}; allowed values: {', '.join(spec['choices'])}")
        if isinstance(value, int) and not isinstance(value, bool):
            if "min" in spec and value < spec["min"]:
                raise InputError(f"{source}: key {path!r} must be at least {spec['min']}, got {value}")
            if "max" in spec and value > spec["max"]:
                raise InputError(f"{source}: key {path!r} must be at most {spec['max']}, got {value}")
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, str):
                    raise InputError(f"{source}: key {path!r} must be a list of strings, found {item!r}")
                if "items" in spec and item not in spec["items"]:
                    raise InputError(f"{source}: key {path!r} has {item!r}; allowed values: {', '.join(spec['items'])}")
        out[key] = copy.deepcopy(value)
    return out


def validate_config(raw: Any, *, source: str = "config") -> dict[str, Any]:
    """Validate a parsed configuration mapping and fill in the defaults.

    Raises :class:`~medlens.core.errors.InputError` naming the key, the expected type or the
    allowed values, and what was found.
    """
    cfg = _validate(raw if raw is not None else {}, SCHEMA, "", source)
    c = cfg["cohort"]
    if (c["csv"] is None) == (c["catalog"] is None):
        raise InputError(
            f"{source}: give the cohort as cohort.csv or as cohort.catalog with cohort.query (one of them)"
        )
    if (c["catalog"] is None) != (c["query"] is None):
        raise InputError(f"{source}: cohort.catalog and cohort.query must be given together")
    if (c["time_column"] is None) != (c["event_column"] is None):
        raise InputError(f"{source}: cohort.time_column and cohort.event_column must be given together")
    if cfg["modalities"] is not None:
        _validate_modalities(cfg, source)
    else:
        _validate_variants(cfg, {"radiomics", "clinical"}, source)
    if cfg["modalities"] is None and c["mask_column"] is None and cfg["mask"]["method"] is None:
        raise InputError(f"{source}: give cohort.mask_column (a mask file per case) or mask.method (segmentation)")
    if cfg["mask"]["method"] is not None:
        from medlens.segment.dispatch import METHODS, method_options

        if cfg["mask"]["method"] not in METHODS:
            raise InputError(
                f"{source}: mask.method is {cfg['mask']['method']!r}; allowed values: {', '.join(METHODS)}"
            )
        allowed = method_options(cfg["mask"]["method"])
        unknown = sorted(set(cfg["mask"]["options"]) - set(allowed))
        if unknown:
            raise InputError(
                f"{source}: mask.options has {', '.join(map(repr, unknown))}, not an option of "
                f"{cfg['mask']['method']!r}; its options are: {', '.join(allowed) or '(none)'}"
            )
    elif cfg["mask"]["options"]:
        raise InputError(f"{source}: mask.options is set but mask.method is not; set mask.method or drop mask.options")
    try:
        from dask.utils import parse_bytes

        parse_bytes(cfg["execution"]["memory_limit"])
    except ImportError:  # pragma: no cover - dask is a dependency
        pass
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"{source}: execution.memory_limit {cfg['execution']['memory_limit']!r} is not a size "
            "(use e.g. '2GB', '500MB')"
        ) from exc
    if cfg["model"]["harmonise"] is True:
        cfg["model"]["harmonise"] = "combat"
    if cfg["model"]["harmonise"] and c["batch_column"] is None:
        raise InputError(
            f"{source}: model.harmonise is {cfg['model']['harmonise']!r} but cohort.batch_column is not set; "
            "name the column that holds the centre/scanner of each case"
        )
    return cfg


def _validate_modalities(cfg: dict[str, Any], source: str) -> None:
    """Check ``modalities`` (names, one image and one mask source each) and ``model.variants``."""
    mods = cfg["modalities"]
    if not mods:
        raise InputError(f"{source}: modalities is empty; give at least one modality or leave the key out")
    if cfg["mask"]["method"] is not None:
        raise InputError(
            f"{source}: mask.method cannot be combined with modalities (each modality names its mask); "
            "drop mask.method or the modalities section"
        )
    out: dict[str, Any] = {}
    for name, spec in mods.items():
        if not isinstance(name, str) or not _MODALITY_NAME.match(name):
            raise InputError(
                f"{source}: modality name {name!r} must be lower-case letters and digits starting with a letter "
                "(it becomes the column prefix, e.g. pet_stat_max)"
            )
        m = _validate(spec if spec is not None else {}, MODALITY_SCHEMA, f"modalities.{name}", source)
        for what in ("image", "mask"):
            if (m[f"{what}_column"] is None) == (m[what] is None):
                raise InputError(
                    f"{source}: modalities.{name} needs exactly one of {what}_column (a CSV column) and "
                    f"{what} (a path template such as '{{patient_id}}/MR_T1/{what}')"
                )
        out[name] = m
    cfg["modalities"] = out
    _validate_variants(cfg, set(out) | {"clinical"}, source)


def _validate_variants(cfg: dict[str, Any], groups: set[str], source: str) -> None:
    """``model.variants``: each a non-empty list of known feature groups, and an outcome to predict."""
    for vname, members in cfg["model"]["variants"].items():
        if not isinstance(members, list) or not members or not all(isinstance(g, str) for g in members):
            raise InputError(f"{source}: model.variants.{vname} must be a non-empty list of feature groups")
        unknown = sorted(set(members) - groups)
        if unknown:
            raise InputError(
                f"{source}: model.variants.{vname} has {', '.join(map(repr, unknown))}; "
                f"the feature groups are: {', '.join(sorted(groups))}"
            )
    if cfg["model"]["variants"] and cfg["cohort"]["outcome"] is None:
        raise InputError(f"{source}: model.variants needs cohort.outcome (a binary outcome to predict)")


@dataclass
class RunConfig:
    """A validated run configuration, with paths resolved."""

    raw: dict[str, Any]
    source: Path | None
    data_dir: Path
    out_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def modalities(self) -> dict[str, dict[str, Any]] | None:
        """The ``modalities`` section (validated), or None for a single-image run."""
        return self.raw.get("modalities")

    def section(self, name: str) -> dict[str, Any]:
        return self.raw[name]

    def feature_settings(self) -> dict[str, Any]:
        """The parts of the configuration that change a case's features (paths absolute)."""
        out = {
            "mask": self.raw["mask"],
            "preprocess": self.raw["preprocess"],
            "radiomics": self.raw["radiomics"],
        }
        if self.raw.get("modalities") is not None:
            out["modalities"] = self.raw["modalities"]
        return out

    def settings_for_hash(self) -> dict[str, Any]:
        """:meth:`feature_settings` with settings files replaced by their name and content hash.

        So moving a project folder does not invalidate finished cases, but editing a settings
        file does.
        """
        out = copy.deepcopy(self.feature_settings())
        places = [(out[section], key) for section, key in (("preprocess", "recipe"), ("radiomics", "settings"))]
        for spec in (out.get("modalities") or {}).values():
            places += [(spec, "preprocess"), (spec, "radiomics")]
        for holder, key in places:
            v = holder[key]
            if isinstance(v, str) and _is_yaml_path(v):
                holder[key] = {"file": Path(v).name, "sha256": hashlib.sha256(Path(v).read_bytes()).hexdigest()}
        return out


def _check_recipe(spec: Any) -> None:
    """Build the preprocessing recipe once, so a bad step or parameter fails before any case runs."""
    if spec is None:
        return
    try:
        from medlens.preprocess import Recipe
    except ImportError:  # the run records that the recipe could not be applied
        return
    if isinstance(spec, str):
        Recipe.from_yaml(spec)
    else:
        Recipe.from_dict(spec, source="config preprocess.recipe")


def _is_yaml_path(value: str) -> bool:
    return value.lower().endswith((".yaml", ".yml"))


def settings_hash(settings: Any) -> str:
    """SHA-256 (hex, first 16 characters) of a JSON-able settings object, key order ignored."""
    body = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    raw: dict[str, Any] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> RunConfig:
    """Read and validate a run configuration; command-line options override the file.

    Relative ``data_dir`` and ``output.dir`` are resolved against the config file's folder;
    ``--data`` (``data_dir``) against the current folder.
    """

    if raw is None:
        if path is None:
            raise InputError("load_config needs a path or a raw mapping")
        from medlens.core.config_file import read_config_file  # the one rule for config files

        p = Path(path)
        raw = read_config_file(p, what="configuration")
        base = p.resolve().parent
        source = str(p)
    else:
        base = Path.cwd()
        source = "config"
    cfg = validate_config(raw, source=source)
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        cfg["execution"]["workers"] = workers
    if scheduler is not None:
        cfg["execution"]["scheduler"] = scheduler
    if data_dir is not None:
        ddir = Path(data_dir).resolve()
    elif cfg["data_dir"] is not None:
        ddir = (base / cfg["data_dir"]).resolve()
    else:
        ddir = base
    if not ddir.is_dir():
        raise InputError(f"data folder {ddir} does not exist (set data_dir in the config or pass --data)")
    if out_dir is not None:
        odir = Path(out_dir).resolve()
    elif cfg["output"]["dir"] is not None:
        odir = (base / cfg["output"]["dir"]).resolve()
    else:
        odir = (Path.cwd() / "runs" / cfg["name"]).resolve()
    places = [
        (cfg[section], key, f"{section}.{key}")
        for section, key in (("preprocess", "recipe"), ("radiomics", "settings"))
    ]
    for name, spec in (cfg["modalities"] or {}).items():
        places += [
            (spec, "preprocess", f"modalities.{name}.preprocess"),
            (spec, "radiomics", f"modalities.{name}.radiomics"),
        ]
    for holder, key, where in places:
        v = holder[key]
        if isinstance(v, str) and _is_yaml_path(v):
            f = Path(v) if Path(v).is_absolute() else base / v
            if not f.is_file():
                raise InputError(f"{source}: {where} file {f} not found (relative paths start at the config's folder)")
            holder[key] = str(f.resolve())
    _check_recipe(cfg["preprocess"]["recipe"])
    for spec in (cfg["modalities"] or {}).values():
        _check_recipe(spec["preprocess"])
    cfg["data_dir"] = str(ddir)
    cfg["output"]["dir"] = str(odir)
    return RunConfig(raw=cfg, source=Path(path) if path else None, data_dir=ddir, out_dir=odir)
