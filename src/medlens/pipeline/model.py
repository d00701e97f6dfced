"""The cohort run's model step: the predictor matrix from the finished cases, then :mod:`medlens.learn.tabular`.

The learning itself (harmonisation, Cox, cross-validation, metrics) lives in :mod:`medlens.learn.tabular`;
this module only knows the run's results and configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.pipeline.config import RunConfig

__all__ = ["build_matrix", "column_groups", "compare_variants", "fit_and_validate"]

_DIAGNOSTIC_PREFIXES = (
    "img_dim_",
    "vox_dim_",
    "mean_int_",
    "min_int_",
    "max_int_",
    "int_mask_",
    "morph_mask_",
    "diag_",
)


def build_matrix(results: list[dict[str, Any]], config: RunConfig) -> tuple[np.ndarray, list[str], list[str]]:
    """Predictor matrix (cases x features), the column names and which of them are clinical.

    Radiomics columns: every non-diagnostic feature tag present for all cases with at least one
    finite value. Clinical: the CSV's clinical columns (numeric; ``M``/``F`` coded 1/0) and the
    DICOM-header facts named in ``model.clinical_from_dicom``. With ``model.harmonise`` the
    batch code is appended as the last column (consumed by :class:`BatchHarmoniser`).
    """
    tags = sorted(set.intersection(*(set(r["features"]) for r in results))) if results else []
    mods = tuple(config.modalities or ())

    def bare(tag: str) -> str:  # a multimodal run prefixes every tag with its modality name
        head, _, rest = tag.partition("_")
        return rest if head in mods else tag

    tags = [t for t in tags if not bare(t).startswith(_DIAGNOSTIC_PREFIXES)]
    cols: list[list[float]] = []
    names: list[str] = []
    for t in tags:
        v = [float(r["features"][t]) if r["features"][t] is not None else np.nan for r in results]
        if np.isfinite(v).any():
            cols.append(v)
            names.append(t)

    def code(v: Any) -> float:
        if v is None:
            return np.nan
        if isinstance(v, str):
            return {"M": 1.0, "F": 0.0, "MALE": 1.0, "FEMALE": 0.0}.get(v.strip().upper(), np.nan)
        return float(v)

    clinical: list[str] = []
    for col in config.section("cohort")["clinical"]:
        cols.append([code(r["case"]["clinical"].get(col)) for r in results])
        names.append(f"clin_{col}")
        clinical.append(names[-1])
    for fact in config.section("model")["clinical_from_dicom"]:
        v = [code((r.get("clinical_dicom") or {}).get(fact)) for r in results]
        if np.isfinite(v).sum() >= 2:
            cols.append(v)
            names.append(f"clin_dicom_{fact}")
            clinical.append(names[-1])
    if not names:
        raise InputError("no usable predictors: every feature is missing in the finished cases")
    X = np.array(cols, dtype=np.float64).T
    X[np.isinf(X)] = np.nan  # an infinite feature value is treated as missing (imputed inside the folds)
    if config.section("model")["harmonise"]:
        labels = sorted({str(r["case"]["batch"]) for r in results})
        X = np.column_stack([X, [labels.index(str(r["case"]["batch"])) for r in results]])
    return X, names, clinical


def fit_and_validate(results: list[dict[str, Any]], config: RunConfig, out_dir: Path) -> dict[str, Any]:
    """Build the matrix of the finished cases and cross-validate / refit / save the model (see learn.tabular)."""
    from medlens.learn.tabular import fit_and_validate as fit

    cohort = config.section("cohort")
    X, names, clinical = build_matrix(results, config)
    return fit(
        X,
        names,
        clinical,
        ids=[r["case_id"] for r in results],
        model_cfg=config.section("model"),
        out_dir=out_dir,
        outcome=None if cohort["outcome"] is None else np.array([r["case"]["outcome"] for r in results], dtype=int),
        time=None
        if cohort["time_column"] is None
        else np.array([r["case"]["time"] for r in results], dtype=np.float64),
        event=None
        if cohort["time_column"] is None
        else np.array([r["case"]["event"] for r in results], dtype=np.float64),
        saved_extra={"config": config.raw},
    )


def column_groups(names: list[str], clinical: list[str], config: RunConfig) -> list[str]:
    """The feature group of every column of :func:`build_matrix`: its modality name, or ``clinical``."""
    mods = set(config.modalities or ())
    out = []
    for n in names:
        head = n.split("_", 1)[0]
        out.append("clinical" if n in clinical else head if head in mods else "radiomics")
    return out


def compare_variants(results: list[dict[str, Any]], config: RunConfig) -> dict[str, Any]:
    """Nested-CV comparison of the ``model.variants`` feature-group sets (:mod:`medlens.learn.fusion`)."""
    from medlens.learn.fusion import compare_variants as compare

    mcfg = config.section("model")
    X, names, clinical = build_matrix(results, config)
    if mcfg["harmonise"]:
        X = X[:, :-1]  # variants are compared without harmonisation (no batch column)
    groups = column_groups(names, clinical, config)
    y = np.array([r["case"]["outcome"] for r in results], dtype=int)
    return compare(
        X,
        y,
        names=names,
        groups=groups,
        variants=mcfg["variants"],
        folds=mcfg["folds"],
        repeats=mcfg["repeats"],
        seed=mcfg["seed"],
        n_bootstrap=mcfg["bootstrap"],
        classifier=mcfg["classifier"],
    )
