"""Transfer of a self-supervised encoder to lesion segmentation, and the label-efficiency experiment.

The segmentation network, its training recipe and its inference are those of
:mod:`medlens.segment.unet` (``train(..., initial_state=encoder)``, ``predict_probability``,
``postprocess``); only the initialisation of the down path differs between "scratch" and
"pretrained" (the decoder starts from the same seeded random weights in both).

Label efficiency: patient-level K-fold cross-validation; in every fold a fraction of the training
patients (drawn with a fixed seed, the same subset for both initialisations) is labelled, the
number of epochs is scaled by ``1 / fraction`` (capped) so both arms and all fractions see about the same
number of gradient steps, and the Dice of every held-out patient is recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medlens.core.errors import InputError

__all__ = ["bootstrap_mean_ci", "label_efficiency", "summarise_label_efficiency"]


def bootstrap_mean_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile-bootstrap interval of ``values`` (resampling the values, i.e. patients)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise InputError("bootstrap_mean_ci: no values")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(v.size, size=(n_boot, v.size))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def label_efficiency(
    cases: Sequence[Any],
    *,
    encoder_state: Mapping[str, Any],
    config: Any = None,
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    k: int = 5,
    epochs_full: int = 4,
    max_epochs: int = 24,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-patient Dice of U-Nets trained from scratch and from ``encoder_state`` on labelled subsets.

    Parameters
    ----------
    cases
        :class:`medlens.segment.unet.Case` objects (PET in SUVbw with the expert mask).
    encoder_state
        Pretrained down-path weights (:func:`medlens.learn.ssl.load_pretrained_encoder`).
    fractions
        Fractions of each fold's training patients that are labelled (at least 2 patients).
    epochs_full
        Epochs at fraction 1; a fraction ``f`` trains ``min(max_epochs, ceil(epochs_full / f))`` epochs.

    Returns
    -------
    list of dict
        ``{"fold", "fraction", "n_labelled", "init", "patient_id", "dice"}`` per held-out patient.
    """
    from medlens.segment import metrics
    from medlens.segment.unet.infer import postprocess, predict_probability
    from medlens.segment.unet.model import UNetConfig
    from medlens.segment.unet.train import patient_folds, train

    cfg = config or UNetConfig()
    for f in fractions:
        if not 0 < f <= 1:
            raise InputError(f"fractions must be in (0, 1], got {f}")
    by_id = {c.patient_id: c for c in cases}
    if len(by_id) != len(cases):
        raise InputError("label_efficiency: patient ids must be unique (one case per patient)")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for fold, (train_ids, test_ids) in enumerate(patient_folds(list(by_id), k=k, seed=seed)):
        rng = np.random.default_rng(seed + 100 * fold)
        order = list(rng.permutation(train_ids))
        for f in fractions:
            n = max(2, round(f * len(train_ids)))
            subset = [by_id[p] for p in order[:n]]  # nested subsets: 10 % is inside 25 % ...
            epochs = min(max_epochs, math.ceil(epochs_full / f))
            for init, state in (("scratch", None), ("pretrained", encoder_state)):
                res = train(subset, cfg, epochs=epochs, seed=seed + fold, initial_state=state)
                for pid in test_ids:
                    c = by_id[pid]
                    pred = postprocess(c.image, predict_probability(c.image, res.net, cfg), cfg)
                    d = metrics.dice(pred, c.mask)
                    rows.append(
                        {
                            "fold": fold,
                            "fraction": f,
                            "n_labelled": n,
                            "init": init,
                            "patient_id": pid,
                            "dice": float(0.0 if math.isnan(d) else d),
                        }
                    )
                if log:
                    mean = np.mean([r["dice"] for r in rows[-len(test_ids) :]])
                    log(
                        f"fold {fold} fraction {f:g} ({n} patients, {epochs} epochs) {init}: "
                        f"Dice {mean:.3f} ({time.perf_counter() - t0:.0f} s)"
                    )
    return rows


def summarise_label_efficiency(rows: Sequence[Mapping[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per fraction: mean Dice [95 % CI] for each arm and the paired difference pretrained - scratch [95 % CI]."""
    out = []
    for f in sorted({r["fraction"] for r in rows}):
        sub = [r for r in rows if r["fraction"] == f]
        arms = {a: {r["patient_id"]: r["dice"] for r in sub if r["init"] == a} for a in ("scratch", "pretrained")}
        ids = sorted(set(arms["scratch"]) & set(arms["pretrained"]))
        diff = [arms["pretrained"][p] - arms["scratch"][p] for p in ids]
        out.append(
            {
                "fraction": f,
                "n_labelled": sorted({r["n_labelled"] for r in sub}),
                "n_patients": len(ids),
                "scratch": bootstrap_mean_ci([arms["scratch"][p] for p in ids], seed=seed),
                "pretrained": bootstrap_mean_ci([arms["pretrained"][p] for p in ids], seed=seed),
                "difference": bootstrap_mean_ci(diff, seed=seed),
            }
        )
    return out
