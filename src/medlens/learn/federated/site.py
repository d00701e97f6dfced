"""What a site computes on its own rows: features, folds, summaries, local training and evaluation.

No Flower here: :mod:`medlens.learn.federated.apps` calls these from the ClientApp. Everything a site
returns is either a model update or a sum over its patients (moments, score histograms, Dice sums);
:func:`check_outgoing` refuses to send anything shaped like a feature row table or an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_write_text
from medlens.core.errors import InputError
from medlens.learn.federated import stats
from medlens.learn.federated.sites import SiteCase, site_cases

__all__ = ["CLINICAL_COLUMNS", "DIAGNOSTIC_PREFIXES", "TabularSite", "UNetSite", "check_outgoing"]

#: Processing descriptors, not tumour properties: left out of the model (the same list as ``medlens run``).
DIAGNOSTIC_PREFIXES = ("img_dim_", "vox_dim_", "mean_int_", "min_int_", "max_int_", "int_mask_", "morph_mask_", "diag_")
#: Header facts used as clinical predictors (as ``model.clinical_from_dicom: [age, sex, bmi]``).
CLINICAL_COLUMNS = ("clin_dicom_age", "clin_dicom_sex", "clin_dicom_bmi")

_MEMO: dict[tuple[str, ...], Any] = {}


def check_outgoing(arrays: Mapping[str, np.ndarray], *, n_rows: int, image_shapes: list[tuple[int, ...]]) -> None:
    """Refuse to send an array shaped like the site's rows or images (a defence in depth, not the design).

    Raises :class:`InputError` when an array has a leading dimension equal to ``n_rows`` and a second
    dimension (a case-by-feature table), or ends with the in-plane shape of one of ``image_shapes``.
    """
    for k, a in arrays.items():
        shp = tuple(np.shape(a))
        if len(shp) >= 2 and shp[0] == n_rows and n_rows > 2:
            raise InputError(f"refusing to send {k!r} of shape {shp}: it looks like one row per patient")
        for s in image_shapes:
            if len(shp) >= 2 and len(s) >= 2 and shp[-2:] == tuple(s[-2:]):
                raise InputError(f"refusing to send {k!r} of shape {shp}: it has the shape of an image")


def _settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TabularSite:
    """A site's radiomics + clinical table (features cached in ``work_dir``) and its local folds.

    Parameters
    ----------
    data_dir, work_dir
        The site's folder (read only) and its work folder (catalog, feature cache).
    settings
        Radiomics settings mapping (as in the YAML files), identical at all sites for a common schema.
    folds, seed
        Site-local stratified folds (every site splits its own patients; fold ``f`` of the federation is
        the union of the sites' folds ``f``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        *,
        settings: Mapping[str, Any],
        roi: str = "GTV_Mass_PET",
        outcome: str = "lung_metastasis",
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.cases: list[SiteCase] = site_cases(data_dir, work_dir, roi=roi, outcome=outcome)
        self.cases = [c for c in self.cases if c.outcome is not None]
        if len(self.cases) < 2:
            raise InputError(f"site {data_dir}: fewer than 2 cases with an outcome")
        feats = self._features(Path(work_dir), dict(settings), roi)
        tags = sorted(set.intersection(*(set(f) for f in feats)))
        tags = [t for t in tags if not t.startswith(DIAGNOSTIC_PREFIXES)]
        self.names = [*tags, *CLINICAL_COLUMNS]
        X = np.array(
            [[f[t] for t in tags] + [c.age_y, c.sex, c.bmi_kg_m2] for f, c in zip(feats, self.cases)], dtype=np.float64
        )
        X[~np.isfinite(X)] = np.nan
        self.X = X
        self.y = np.array([c.outcome for c in self.cases], dtype=int)
        self.fold = self._folds(folds, seed)

    def _features(self, work: Path, settings: dict[str, Any], roi: str) -> list[dict[str, float]]:
        import medlens
        from medlens.radiomics import extract

        key = _settings_key(settings)
        cache_path = work / f"features-{key}.json"
        cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        out, changed = [], False
        for c in self.cases:
            ident = f"{c.patient_id}|{c.image}|{c.rtstruct}|{os.stat(c.rtstruct).st_mtime_ns}"
            if ident not in cache:
                img = medlens.read_image(c.image)
                mask = medlens.read_mask(c.rtstruct, reference=img, roi=roi)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cache[ident] = {k: float(v) for k, v in extract(img, mask, settings).items()}
                changed = True
            out.append(cache[ident])
        if changed:
            atomic_write_text(cache_path, json.dumps(cache))
        return out

    def _folds(self, k: int, seed: int) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold

        fold = np.zeros(len(self.y), dtype=int)
        k_eff = min(k, len(self.y))
        counts = np.bincount(self.y, minlength=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class smaller than k at a small site
            if counts.min() >= 2:
                split = StratifiedKFold(k_eff, shuffle=True, random_state=seed).split(self.X, self.y)
            else:
                from sklearn.model_selection import KFold

                split = KFold(k_eff, shuffle=True, random_state=seed).split(self.X)
            for f, (_, te) in enumerate(split):
                fold[te] = f
        return fold

    def schema(self) -> dict[str, Any]:
        return {"names": self.names, "n_cases": len(self.y)}

    def rows(self, fold: int, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """Training rows (every fold but ``fold``; all rows for ``fold=-1``) or test rows of ``fold``."""
        sel = (self.fold != fold) if train else (self.fold == fold)
        return self.X[sel], self.y[sel]

    def prepared(self, fold: int, prep: Mapping[str, Any], *, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows after imputation (federated means) and, with ``prep["harmonise"]``, this site's ComBat.

        ``prep`` holds ``impute_mean`` and, for harmonisation, ``combat_mean``, ``combat_sd`` and ``method``;
        the site's own ComBat parameters are always estimated on its *training* rows of the fold.
        """
        X, y = self.rows(fold, train=train)
        X = _impute(X, np.asarray(prep["impute_mean"]))
        if prep.get("harmonise"):
            Xtr = _impute(self.rows(fold, train=True)[0], np.asarray(prep["impute_mean"]))
            mean, sd = np.asarray(prep["combat_mean"]), np.asarray(prep["combat_sd"])
            gamma, delta = stats.combat_site_parameters(Xtr, mean, sd, method=str(prep["harmonise"]))
            X = stats.apply_combat(X, mean, sd, gamma, delta)
        return X, y

    def model_rows(self, fold: int, prep: Mapping[str, Any], *, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """Prepared rows standardised with the federated scaler and reduced to the selected features."""
        X, y = self.prepared(fold, prep, train=train)
        sel = np.asarray(prep["selected"], dtype=int)
        Z = (X[:, sel] - np.asarray(prep["scale_mean"])[sel]) / np.asarray(prep["scale_sd"])[sel]
        return Z, y


def _impute(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    X = np.array(X, dtype=np.float64)
    bad = ~np.isfinite(X)
    X[bad] = np.broadcast_to(np.nan_to_num(mean), X.shape)[bad]
    return X


class UNetSite:
    """A site's PET cases for the U-Net, split into local training and test patients.

    The last ``holdout`` patients of a seeded permutation of the site's patients are its test cases
    (never trained on, by any model in the comparison).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        *,
        roi: str = "GTV_Mass_PET",
        holdout: int = 3,
        seed: int = 0,
    ) -> None:
        from medlens.segment.unet.data import load_case

        key = (str(Path(data_dir).resolve()), roi, str(holdout), str(seed))
        if key in _MEMO:
            self.train_cases, self.test_cases = _MEMO[key]
            return
        found = site_cases(data_dir, work_dir, roi=roi)
        cases = [load_case(c.image, c.rtstruct, roi=roi, patient_id=c.patient_id) for c in found]
        order = list(np.random.default_rng(seed).permutation(len(cases)))
        if holdout >= len(cases):
            raise InputError(f"site {data_dir}: holdout={holdout} leaves no training patient of {len(cases)}")
        test_idx = set(order[len(cases) - holdout :]) if holdout > 0 else set()
        self.train_cases = [c for i, c in enumerate(cases) if i not in test_idx]
        self.test_cases = [c for i, c in enumerate(cases) if i in test_idx]
        _MEMO[key] = (self.train_cases, self.test_cases)

    def image_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(c.image.shape) for c in self.train_cases + self.test_cases]
