"""Transfer of the self-supervised encoder to patient-level classification (STS lung metastasis from PET).

A patient is a *bag* of axial slices through the GTV: for every slice the mask touches, a window of the
encoder's ``roi_size`` (64 x 64) centred on the mask's centroid in that slice, in the network units of
the encoder's checkpoint (PET: ``clip(SUV, 0, 25) / 5``), with the mask cropped the same way.

The classifier (:func:`build_classifier`)::

    slices (n, 1, 64, 64) -> U-Net down path -> bottleneck (n, 64, 8, 8)
      -> mask-weighted spatial mean per slice (n, 64)          (:func:`masked_spatial_pool`)
      -> attention pooling over the n slices (64,)             (:func:`attention_pool`; or the mean)
      -> linear head -> logit of P(label = 1)

Arms (same folds, same labelled subsets, same seeded head/attention initialisation):

``scratch``     encoder randomly initialised, everything trained;
``pretrained``  encoder from the SSL checkpoint, everything trained (fine-tuning);
``probe``       encoder from the checkpoint, frozen; only the pooling and the head are trained;
``clinical``    L2 logistic regression on the clinical columns (age, sex, weight, height from the PET
                DICOM header);
``suvmax``      (PET only) logistic regression on the log of the GTV's SUVmax: the one-number uptake
                baseline every image model must beat;
``<arm>+clinical``  late fusion of an image arm and the clinical model: the two log-odds are added and
                the labelled subset's prior log-odds subtracted once (:func:`late_fusion_logit`: the
                combination of two conditionally independent experts; no weight is fitted on the
                training patients' own, optimistic, image predictions).

Label efficiency (:func:`label_efficiency_cls`): stratified patient-level K-fold cross-validation
(:func:`stratified_patient_folds`); in every fold 10/25/50/100 % of each class of the training patients is
labelled (:func:`nested_stratified_subsets`: nested, at least one patient per class, fixed seed); every
arm is trained for the same number of optimisation steps at every fraction; every held-out patient gets
one probability per arm. :func:`summarise_cls` pools the out-of-fold probabilities (each patient held
out once) into one ROC AUC per arm and fraction, with a percentile bootstrap 95 % CI over patients
(the resampling of :func:`medlens.learn.tabular.bootstrap_auc_ci`, with the fast rank AUC of
:mod:`medlens.learn.fusion`) and the paired bootstrap difference against
``scratch`` (:func:`medlens.learn.fusion.paired_auc_difference`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.learn._torch import keeps_torch_state

__all__ = [
    "ARMS",
    "CLINICAL_COLUMNS",
    "Bag",
    "attention_pool",
    "bag_from_images",
    "build_classifier",
    "clinical_matrix",
    "gtv_slices",
    "label_efficiency_cls",
    "late_fusion_logit",
    "load_bags",
    "masked_spatial_pool",
    "nested_stratified_subsets",
    "stratified_patient_folds",
    "summarise_cls",
    "suvmax_matrix",
    "table_rows",
]

#: Image arms, in the order they are trained.
ARMS = ("scratch", "pretrained", "probe")
#: Clinical columns taken from the PET header (``Image.meta.extra``); sex is 1 for "M", 0 for "F".
CLINICAL_COLUMNS = ("age", "sex_male", "weight_kg", "height_m")
#: Cohort CSV columns of the image and mask of each modality (paths relative to the CSV).
COHORT_COLUMNS = {"PT": ("pet_image", "pet_rtstruct", "GTV_Mass_PET"), "CT": ("ct_image", "ct_rtstruct", "GTV_Mass_CT")}


@dataclass(frozen=True)
class Bag:
    """One patient: the GTV slices (network units) and their masks, the label and the clinical values."""

    patient_id: str
    label: int
    slices: np.ndarray  # (n, h, w) float32
    masks: np.ndarray  # (n, h, w) float32 in {0, 1}
    clinical: Mapping[str, float | None] = field(default_factory=dict)


# ---- data -------------------------------------------------------------------------------------------


def _window(a: np.ndarray, cy: int, cx: int, roi: tuple[int, int]) -> np.ndarray:
    h, w = roi
    p = np.pad(a, ((h, h), (w, w)))
    y0, x0 = cy + h - h // 2, cx + w - w // 2
    return np.ascontiguousarray(p[y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


def gtv_slices(x: np.ndarray, mask: np.ndarray, roi: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``roi`` centred on the mask's centroid in every axial slice the mask touches.

    ``x`` and ``mask`` are ``(z, y, x)`` (``x`` in network units). Returns ``(slices, masks)``, each
    ``(n, *roi)`` float32, ``n`` = number of slices with mask voxels (in z order).
    """
    m = np.asarray(mask, bool)
    if x.shape != m.shape or x.ndim != 3:
        raise InputError(f"gtv_slices needs an image and a mask of one 3D shape, got {x.shape} and {m.shape}")
    zs = np.flatnonzero(m.any(axis=(1, 2)))
    if zs.size == 0:
        raise InputError("gtv_slices: the mask is empty")
    sl, mk = [], []
    for z in zs:
        cy, cx = np.argwhere(m[z]).mean(axis=0).round().astype(int)
        sl.append(_window(x[z], int(cy), int(cx), roi))
        mk.append(_window(m[z].astype(np.float32), int(cy), int(cx), roi))
    return np.stack(sl), np.stack(mk)


def _clinical(image: Any) -> dict[str, float | None]:
    extra = image.meta.extra

    def num(key: str) -> float | None:
        v = extra.get(key)
        try:
            f = float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None
        return f if f is not None and math.isfinite(f) and f > 0 else None

    sex = str(extra.get("patient_sex") or "").upper()
    return {
        "age": num("patient_age_years"),
        "sex_male": 1.0 if sex == "M" else 0.0 if sex == "F" else None,
        "weight_kg": num("patient_weight_kg"),
        "height_m": num("patient_size_m"),
    }


def bag_from_images(
    image: Any,
    mask: Any,
    *,
    label: int,
    input_spec: Mapping[str, Any],
    roi: tuple[int, int] = (64, 64),
    where: str = "",
) -> Bag:
    """A :class:`Bag` from an image and its mask, refusing an image of another modality/units than ``input_spec``."""
    from medlens.learn.encoders import check_input
    from medlens.learn.ssl import network_input

    check_input(image, input_spec, path=where)
    image.require_same_grid(mask, what="mask")
    x = network_input(image, str(input_spec["modality"]))
    if x.ndim != 3:
        raise InputError(f"{image.meta.source or 'image'}: a 3D image (z, y, x) is needed, got shape {x.shape}")
    try:
        s, m = gtv_slices(x, np.asarray(mask.array, bool), roi)
    except InputError as exc:
        raise InputError(f"{mask.meta.source or 'mask'}: {exc}") from None
    return Bag(image.meta.patient_id, int(label), s, m, _clinical(image))


def _read_rows(cohort_csv: Path, label: str, modality: str) -> list[dict[str, str]]:
    if not cohort_csv.is_file():
        raise InputError(f"{cohort_csv}: cohort CSV not found")
    if modality not in COHORT_COLUMNS:
        raise InputError(f"the encoder's modality {modality!r} has no cohort columns; expected one of PT, CT")
    img_col, mask_col, _ = COHORT_COLUMNS[modality]
    with cohort_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    have = sorted(rows[0]) if rows else []
    need = ["patient_id", label, img_col, mask_col]
    missing = [c for c in need if c not in have]
    if not rows or missing:
        raise InputError(
            f"{cohort_csv}: the cohort CSV needs the columns {need}; missing {missing or need}, found {have}. "
            f"Name the label column with --label"
        )
    out = []
    for i, r in enumerate(rows, start=2):
        v = (r.get(label) or "").strip()
        if v not in ("0", "1", "0.0", "1.0"):
            raise InputError(f"{cohort_csv} line {i}: label {label!r} must be 0 or 1, found {v!r}")
        if not r.get(img_col) or not r.get(mask_col):
            raise InputError(f"{cohort_csv} line {i}: empty {img_col!r} or {mask_col!r}")
        out.append(r)
    ids = [r["patient_id"] for r in out]
    if len(set(ids)) != len(ids):
        raise InputError(f"{cohort_csv}: patient_id values must be unique (one row per patient)")
    return out


def _cache_key(rows: Sequence[Mapping[str, str]], base: Path, parts: Sequence[Any]) -> str:
    h = hashlib.sha256(json.dumps(list(parts)).encode())
    for r in rows:
        for v in r.values():
            p = base / v if v else None
            h.update(str(v).encode())
            if p is not None and p.exists():
                h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def load_bags(
    cohort_csv: str | os.PathLike[str],
    *,
    input_spec: Mapping[str, Any],
    label: str = "lung_metastasis",
    roi: tuple[int, int] = (64, 64),
    roi_name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    model_name: str = "",
    log: Callable[[str], None] | None = None,
) -> list[Bag]:
    """Read the bags of every patient a cohort CSV lists (the modality's image and RTSTRUCT columns).

    The crops are cached in ``cache_dir`` (``cls_crops_<key>.npz``, written atomically; the key hashes
    the CSV rows, the files' modification times, the window and the ROI), so a second run reads no DICOM.

    Raises
    ------
    InputError
        A missing label/image/mask column, a label other than 0/1, an image of another modality or
        units than the encoder's (``input_spec``), an empty mask.
    """
    from medlens.core.atomic import atomic_path

    p = Path(cohort_csv)
    modality = str(input_spec.get("modality", ""))
    rows = _read_rows(p, label, modality)[: limit or None]
    img_col, mask_col, default_roi = COHORT_COLUMNS[modality]
    roi_name = roi_name or default_roi
    cache = None
    if cache_dir is not None:
        key = _cache_key(rows, p.parent, [label, list(roi), roi_name, dict(input_spec)])
        cache = Path(cache_dir) / f"cls_crops_{key}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                out, start = [], 0
                for pid, lab, n, clin in zip(
                    meta["ids"], meta["labels"], meta["counts"], meta["clinical"], strict=True
                ):
                    out.append(Bag(pid, lab, z["slices"][start : start + n], z["masks"][start : start + n], clin))
                    start += n
            if log:
                log(f"{len(out)} patients from the crop cache {cache}")
            return out
    from medlens.io import read_image, read_mask
    from medlens.learn.encoders import check_input

    bags = []
    for r in rows:
        ip, mp = p.parent / r[img_col], p.parent / r[mask_col]
        image = read_image(ip)
        try:  # before reading the mask: say first what is wrong with the image
            check_input(image, input_spec, path=model_name)
        except InputError as exc:
            raise InputError(f"{exc} (cohort {p.name}, patient {r['patient_id']}: {ip})") from None
        mask = read_mask(mp, reference=image, roi=roi_name)
        b = bag_from_images(image, mask, label=int(float(r[label])), input_spec=input_spec, roi=roi, where=str(ip))
        bags.append(Bag(r["patient_id"], b.label, b.slices, b.masks, b.clinical))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "ids": [b.patient_id for b in bags],
            "labels": [b.label for b in bags],
            "counts": [len(b.slices) for b in bags],
            "clinical": [dict(b.clinical) for b in bags],
        }
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                slices=np.concatenate([b.slices for b in bags]),
                masks=np.concatenate([b.masks for b in bags]),
                meta=np.array(json.dumps(meta)),
            )
    return bags


def clinical_matrix(bags: Sequence[Bag], columns: Sequence[str] = CLINICAL_COLUMNS) -> np.ndarray:
    """``(n_patients, n_columns)`` float array of the clinical values (NaN where missing)."""
    return np.array(
        [[np.nan if b.clinical.get(c) is None else float(b.clinical[c]) for c in columns] for b in bags],  # type: ignore[arg-type]
        dtype=np.float64,
    ).reshape(len(bags), len(columns))


def suvmax_matrix(bags: Sequence[Bag], *, scale: float = 5.0) -> np.ndarray:
    """``(n_patients, 1)``: log of the largest GTV value of each bag in SUV (network units x ``scale``; the
    crops are clipped at SUV 25), the one-number uptake baseline."""
    vals = []
    for b in bags:
        v = b.slices[b.masks > 0.5]
        vals.append(math.log(max(float(v.max()) if v.size else 0.0, 1e-6) * scale))
    return np.asarray(vals, np.float64)[:, None]


# ---- folds and subsets --------------------------------------------------------------------------------


def stratified_patient_folds(
    patient_ids: Sequence[str], labels: Sequence[int], *, k: int = 5, seed: int = 0
) -> list[tuple[list[str], list[str]]]:
    """K stratified folds of (train ids, test ids) over unique patients (every patient tested once)."""
    from sklearn.model_selection import StratifiedKFold

    ids = list(patient_ids)
    y = np.asarray(labels, int)
    if len(set(ids)) != len(ids) or len(ids) != len(y):
        raise InputError("stratified_patient_folds: one unique patient id per label is needed")
    smallest = int(min(np.sum(y == 0), np.sum(y == 1)))
    if k < 2 or k > smallest:
        raise InputError(
            f"folds must be between 2 and the size of the smaller class ({smallest} patients), got {k}; "
            "use fewer folds or more patients of both classes"
        )
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [([ids[i] for i in tr], [ids[i] for i in te]) for tr, te in skf.split(np.zeros(len(y)), y)]


def nested_stratified_subsets(
    patient_ids: Sequence[str], labels: Sequence[int], fractions: Sequence[float], *, seed: int = 0
) -> dict[float, list[str]]:
    """Labelled subsets for each fraction: nested (a smaller fraction's subset lies inside a larger one's)
    and stratified (``max(1, round(f * n_c))`` patients of each class ``c``, drawn in one seeded order)."""
    y = np.asarray(labels, int)
    ids = list(patient_ids)
    for f in fractions:
        if not 0 < f <= 1:
            raise InputError(f"fractions must be in (0, 1], got {f}")
    rng = np.random.default_rng(seed)
    order = {c: [ids[i] for i in rng.permutation(np.flatnonzero(y == c))] for c in (0, 1)}
    if not order[0] or not order[1]:
        raise InputError("nested_stratified_subsets: the training patients must hold both classes")
    out = {}
    for f in sorted(fractions):
        chosen = []
        for c in (0, 1):
            n = min(len(order[c]), max(1, round(f * len(order[c]))))
            chosen += order[c][:n]
        out[float(f)] = sorted(chosen)
    return out


# ---- model --------------------------------------------------------------------------------------------


def masked_spatial_pool(feat: Any, mask: Any) -> Any:
    """Per slice, the mean of the feature map ``(n, C, h, w)`` weighted by the mask ``(n, 1, H, W)``
    area-averaged onto the ``h x w`` grid; returns ``(n, C)``."""
    import torch

    mk = torch.nn.functional.adaptive_avg_pool2d(mask, tuple(feat.shape[-2:]))
    return (feat * mk).sum(dim=(2, 3)) / torch.clamp(mk.sum(dim=(2, 3)), min=1e-6)


def attention_pool(h: Any, scores: Any | None) -> Any:
    """``sum_i softmax(scores)_i h_i`` over the slices of a bag (``h`` ``(n, C)``, ``scores`` ``(n,)``);
    ``scores=None`` is the plain mean."""
    import torch

    if scores is None:
        return h.mean(dim=0)
    a = torch.softmax(scores.reshape(-1), dim=0)
    return (a[:, None] * h).sum(dim=0)


def build_classifier(
    unet_config: Any, *, pooling: str = "attention", encoder_state: Mapping[str, Any] | None = None
) -> Any:
    """The bag classifier (a ``torch.nn.Module``): ``forward(slices (n,1,h,w), masks (n,1,h,w)) -> logit ()``.

    The U-Net is built first (under the caller's seed), then the pooling and the head, so two arms built
    under one seed share the head's initial weights; ``encoder_state`` then replaces the down path.
    """
    import torch

    from medlens.learn.encoders import encoder_modules
    from medlens.segment.unet.model import build_unet

    if pooling not in ("attention", "mean"):
        raise InputError(f"pooling must be 'attention' or 'mean', got {pooling!r}")
    unet = build_unet(unet_config)
    if encoder_state is not None:
        from medlens.segment.unet.model import state_mismatch

        bad = state_mismatch(unet.state_dict(), encoder_state, partial=True)
        if bad:
            raise InputError("the encoder weights do not fit the U-Net: " + "; ".join(bad))
        unet.load_state_dict(dict(encoder_state), strict=False)
    c = int(unet_config.channels[-1])

    class BagClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.ModuleList(encoder_modules(unet))
            self.attention = (
                torch.nn.Sequential(torch.nn.Linear(c, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
                if pooling == "attention"
                else None
            )
            self.head = torch.nn.Linear(c, 1)

        def slice_features(self, x: Any, m: Any) -> Any:
            for mod in self.encoder:
                x = mod(x)
            return masked_spatial_pool(x, m)

        def forward(self, x: Any, m: Any) -> Any:
            h = self.slice_features(x, m)
            z = attention_pool(h, None if self.attention is None else self.attention(h))
            return self.head(z).reshape(())

    return BagClassifier()


def _augment(x: np.ndarray, m: np.ndarray, rng: np.random.Generator, shift: int = 4) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = rng.integers(-shift, shift + 1, size=2)
    x, m = np.roll(x, (dy, dx), axis=(1, 2)), np.roll(m, (dy, dx), axis=(1, 2))
    if rng.random() < 0.5:
        x, m = x[:, :, ::-1], m[:, :, ::-1]
    if rng.random() < 0.5:
        x, m = x[:, ::-1], m[:, ::-1]
    return np.ascontiguousarray(x * rng.uniform(0.9, 1.1)), np.ascontiguousarray(m)


@keeps_torch_state
def _train_arm(
    bags: Sequence[Bag],
    *,
    unet_config: Any,
    encoder_state: Mapping[str, Any] | None,
    freeze: bool,
    pooling: str,
    steps: int,
    batch_bags: int,
    max_slices: int,
    lr_encoder: float,
    lr_head: float,
    weight_decay: float,
    seed: int,
) -> Any:
    import torch

    torch.manual_seed(seed)
    net = build_classifier(unet_config, pooling=pooling, encoder_state=encoder_state)
    enc_params = list(net.encoder.parameters())
    other = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
    groups = [{"params": other, "lr": lr_head}]
    if freeze:
        for p in enc_params:
            p.requires_grad_(False)
    else:
        groups.append({"params": enc_params, "lr": lr_encoder})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    y = np.array([b.label for b in bags])
    n1 = max(1, int(y.sum()))
    pos_weight = torch.tensor(float(len(y) - n1) / n1)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        idx = rng.choice(len(bags), size=min(batch_bags, len(bags)), replace=False)
        loss = torch.zeros(())
        for i in idx:
            b = bags[int(i)]
            take = np.sort(rng.choice(len(b.slices), size=min(max_slices, len(b.slices)), replace=False))
            xs, ms = _augment(b.slices[take], b.masks[take], rng)
            logit = net(torch.from_numpy(xs[:, None]), torch.from_numpy(ms[:, None]))
            target = torch.tensor(float(b.label))
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logit, target, pos_weight=pos_weight)
        opt.zero_grad()
        (loss / len(idx)).backward()
        opt.step()
    net.eval()
    return net


def _predict_logits(net: Any, bags: Sequence[Bag]) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for b in bags:
            out.append(float(net(torch.from_numpy(b.slices[:, None]), torch.from_numpy(b.masks[:, None]))))
    return np.asarray(out)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def late_fusion_logit(image_logit: np.ndarray, clinical_logit: np.ndarray, prior: float) -> np.ndarray:
    """``logit_img + logit_clin - logit(prior)``: the posterior log-odds of two conditionally independent
    experts that each include the prior (``prior`` = share of positives among the labelled patients)."""
    return np.asarray(image_logit, np.float64) + np.asarray(clinical_logit, np.float64) - _logit(prior)


def _clinical_logits(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, c: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    med = np.nanmedian(x_train, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    xt, xs = np.where(np.isnan(x_train), med, x_train), np.where(np.isnan(x_test), med, x_test)
    mu, sd = xt.mean(axis=0), xt.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    model = LogisticRegression(C=c, max_iter=1000).fit((xt - mu) / sd, y_train)
    return np.asarray(model.decision_function((xs - mu) / sd), np.float64)


# ---- the experiment -----------------------------------------------------------------------------------


def label_efficiency_cls(
    bags: Sequence[Bag],
    *,
    encoder_state: Mapping[str, Any],
    unet_config: Any = None,
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    k: int = 5,
    seed: int = 0,
    repeats: int = 1,
    arms: Sequence[str] = ARMS,
    clinical: bool = True,
    suvmax: bool = False,
    pooling: str = "attention",
    steps: int = 120,
    batch_bags: int = 4,
    max_slices: int = 8,
    lr_encoder: float = 3e-4,
    lr_head: float = 1e-3,
    weight_decay: float = 1e-2,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Out-of-fold probability of every held-out patient, per fraction and arm (see the module docstring).

    Returns
    -------
    list of dict
        ``{"repeat", "fold", "fraction", "n_labelled", "n_labelled_pos", "arm", "patient_id", "label",
        "logit", "probability"}``. A repeat is a new stratified split (seed ``seed + repeat``) with its own subsets.
    """
    from medlens.segment.unet.model import UNetConfig, torch_threads

    cfg = unet_config or UNetConfig()
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or not arms:
        raise InputError(f"arms must be among {list(ARMS)}, got {list(arms)}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    by_id = {b.patient_id: b for b in bags}
    if len(by_id) != len(bags):
        raise InputError("label_efficiency_cls: patient ids must be unique (one bag per patient)")
    ids = list(by_id)
    y = np.array([by_id[p].label for p in ids])
    xc = clinical_matrix([by_id[p] for p in ids]) if clinical else None
    xs = suvmax_matrix([by_id[p] for p in ids]) if suvmax else None
    row_of = {p: i for i, p in enumerate(ids)}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    splits = [
        (rep, fold, tr, te)
        for rep in range(repeats)
        for fold, (tr, te) in enumerate(stratified_patient_folds(ids, y.tolist(), k=k, seed=seed + rep))
    ]
    with torch_threads(threads):
        for rep, fold, train_ids, test_ids in splits:
            rseed = seed + 10007 * rep
            subsets = nested_stratified_subsets(
                train_ids, [by_id[p].label for p in train_ids], fractions, seed=rseed + 100 * fold
            )
            test_bags = [by_id[p] for p in test_ids]
            for f, subset in subsets.items():
                train_bags = [by_id[p] for p in subset]
                ytr = np.array([b.label for b in train_bags])
                logits: dict[str, np.ndarray] = {}
                for arm in arms:
                    net = _train_arm(
                        train_bags,
                        unet_config=cfg,
                        encoder_state=None if arm == "scratch" else encoder_state,
                        freeze=arm == "probe",
                        pooling=pooling,
                        steps=steps,
                        batch_bags=batch_bags,
                        max_slices=max_slices,
                        lr_encoder=lr_encoder,
                        lr_head=lr_head,
                        weight_decay=weight_decay,
                        seed=rseed + 1000 * fold + 7,
                    )
                    logits[arm] = _predict_logits(net, test_bags)
                tr, te = [row_of[p] for p in subset], [row_of[p] for p in test_ids]
                if xs is not None:
                    logits["suvmax"] = _clinical_logits(xs[tr], ytr, xs[te])
                if xc is not None:
                    logits["clinical"] = _clinical_logits(xc[tr], ytr, xc[te])
                    prior = float(ytr.mean())
                    for arm in arms:
                        logits[f"{arm}+clinical"] = late_fusion_logit(logits[arm], logits["clinical"], prior)
                for arm, lg in logits.items():
                    for pid, v in zip(test_ids, lg, strict=True):
                        rows.append(
                            {
                                "repeat": rep,
                                "fold": fold,
                                "fraction": f,
                                "n_labelled": len(subset),
                                "n_labelled_pos": int(ytr.sum()),
                                "arm": arm,
                                "patient_id": pid,
                                "label": int(by_id[pid].label),
                                "logit": float(v),
                                "probability": float(1.0 / (1.0 + math.exp(-float(np.clip(v, -50, 50))))),
                            }
                        )
                if log:
                    log(
                        f"repeat {rep} fold {fold} fraction {f:g} ({len(subset)} labelled, "
                        f"{int(ytr.sum())} positive): {len(logits)} arms ({time.perf_counter() - t0:.0f} s)"
                    )
    return rows


def _repeat_mean_auc_ci(
    y: np.ndarray, p: np.ndarray, pb: np.ndarray | None, *, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Mean over repeats of the AUC of ``p`` ``(R, n)`` (minus that of ``pb`` when given) and its percentile
    bootstrap 95 % CI, resampling patients (the same resample in every repeat and in both arms). For one
    repeat this is the loop of :func:`medlens.learn.fusion.paired_auc_difference` (``pb`` given) or of
    its ``_bootstrap_ci`` (``pb`` None), with the same seed: the same resamples."""
    from medlens.learn.fusion import _auc

    def stat(idx: np.ndarray | slice) -> float:
        a = np.mean([_auc(y[idx], p[r][idx]) for r in range(len(p))])
        return float(a - np.mean([_auc(y[idx], pb[r][idx]) for r in range(len(pb))]) if pb is not None else a)

    value = stat(slice(None))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        boots.append(stat(idx))
    if not boots:
        return value, float("nan"), float("nan")
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return value, float(lo), float(hi)


def summarise_cls(
    rows: Sequence[Mapping[str, Any]], *, baseline: str = "scratch", n_boot: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Per fraction and arm: the ROC AUC of the pooled out-of-fold probabilities (each patient held out once
    per repeat; averaged over repeats) [95 % bootstrap CI over patients], and AUC(arm) - AUC(baseline)
    [paired 95 % bootstrap CI] over the same patients and resamples."""
    from medlens.learn.fusion import _auc

    out = []
    for f in sorted({float(r["fraction"]) for r in rows}):
        sub = [r for r in rows if float(r["fraction"]) == f]
        arms = list(dict.fromkeys(r["arm"] for r in sub))
        reps = sorted({int(r.get("repeat", 0)) for r in sub})
        per: dict[tuple[str, int], dict[str, tuple[int, float]]] = {(a, rep): {} for a in arms for rep in reps}
        for r in sub:
            score = float(r["logit"]) if "logit" in r else float(r["probability"])  # ranks: the logit never saturates
            per[(r["arm"], int(r.get("repeat", 0)))][r["patient_id"]] = (int(r["label"]), score)
        ids = sorted(set.intersection(*(set(v) for v in per.values())))
        y = np.array([per[(arms[0], reps[0])][q][0] for q in ids])
        n_lab = sorted({int(r["n_labelled"]) for r in sub})

        def probs(arm: str) -> np.ndarray:
            return np.array([[per[(arm, rep)][q][1] for q in ids] for rep in reps])  # noqa: B023

        for a in arms:
            p = probs(a)
            auc, lo, hi = _repeat_mean_auc_ci(y, p, None, n_boot=n_boot, seed=seed)
            entry: dict[str, Any] = {
                "fraction": f,
                "n_labelled": n_lab,
                "n_patients": len(ids),
                "n_positive": int(y.sum()),
                "repeats": len(reps),
                "arm": a,
                "auc": auc,
                "auc_ci95": [lo, hi],
                "auc_repeats": [_auc(y, p[r]) for r in range(len(reps))],
            }
            if baseline in arms and a != baseline:
                d, dlo, dhi = _repeat_mean_auc_ci(y, p, probs(baseline), n_boot=n_boot, seed=seed)
                entry["vs"] = baseline
                entry["difference"] = d
                entry["difference_ci95"] = [dlo, dhi]
            out.append(entry)
    return out


def table_rows(summary: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows of :func:`summarise_cls` for a CSV (one per fraction and arm)."""
    rows = []
    for s in summary:
        d_lo, d_hi = s.get("difference_ci95", [float("nan")] * 2)
        rows.append(
            {
                "fraction": s["fraction"],
                "n_labelled": ";".join(map(str, s["n_labelled"])),
                "arm": s["arm"],
                "auc": round(s["auc"], 4),
                "auc_ci95_low": round(s["auc_ci95"][0], 4),
                "auc_ci95_high": round(s["auc_ci95"][1], 4),
                "vs": s.get("vs", ""),
                "difference": round(s.get("difference", float("nan")), 4),
                "difference_ci95_low": round(d_lo, 4),
                "difference_ci95_high": round(d_hi, 4),
                "n_patients": s["n_patients"],
                "n_positive": s["n_positive"],
            }
        )
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of dict rows (the keys of the first row as header)."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def markdown_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The label-efficiency table: one line per fraction, AUC [95 % CI] per arm and the paired differences."""
    fr = sorted({float(s["fraction"]) for s in summary})
    arms = list(dict.fromkeys(s["arm"] for s in summary))
    by = {(float(s["fraction"]), s["arm"]): s for s in summary}
    diffs = [a for a in arms if a in ("pretrained", "probe")]
    head = ["labelled", "patients per fold"] + arms + [f"{a} - scratch" for a in diffs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in fr:
        s0 = by[(f, arms[0])]
        cells = [f"{100 * f:.0f} %", ",".join(map(str, s0["n_labelled"]))]
        for a in arms:
            s = by[(f, a)]
            cells.append(f"{s['auc']:.3f} [{s['auc_ci95'][0]:.3f}, {s['auc_ci95'][1]:.3f}]")
        for a in diffs:
            s = by[(f, a)]
            lo, hi = s["difference_ci95"]
            cells.append(f"{s['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_transfer_cls(
    cohort_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    label: str = "lung_metastasis",
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    k: int = 5,
    seed: int = 0,
    repeats: int = 1,
    arms: Sequence[str] = ARMS,
    clinical: bool = True,
    pooling: str = "attention",
    steps: int = 120,
    cache_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    n_boot: int = 2000,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Read the cohort, run :func:`label_efficiency_cls`, write ``transfer_cls.csv`` (the table),
    ``transfer_cls.json`` (settings, table, per-patient probabilities) and ``transfer_cls.md`` into
    ``out_dir`` (each atomically) and return the JSON document.

    ``checkpoint`` is a ``unet-encoder`` checkpoint (default: the shipped SimCLR PET encoder); one of
    another kind or U-Net architecture, or a cohort image of another modality, raises :class:`InputError`.
    """
    from medlens.core.atomic import atomic_write_text
    from medlens.learn.encoders import WEIGHTS_DIR, load_checkpoint, sha256_file
    from medlens.learn.ssl import load_pretrained_encoder
    from medlens.segment.unet.model import UNetConfig

    t0 = time.perf_counter()
    ck_path = Path(checkpoint) if checkpoint is not None else WEIGHTS_DIR / "sts_pet_simclr.pt"
    cfg = UNetConfig()
    ck = load_checkpoint(ck_path, expect_kind="unet-encoder", encoder_only=True)
    state = load_pretrained_encoder(ck_path, config=cfg)
    roi = tuple(int(s) for s in ck.architecture["unet"]["roi_size"])
    if len(roi) != 2:
        raise InputError(f"{ck_path}: a 2D encoder is needed, the checkpoint's window is {roi}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; an output folder is needed")
    bags = load_bags(
        cohort_csv,
        input_spec=ck.input,
        label=label,
        roi=(roi[0], roi[1]),
        cache_dir=cache_dir,
        limit=limit,
        model_name=str(ck_path),
        log=log,
    )
    if log:
        log(
            f"{len(bags)} patients ({sum(b.label for b in bags)} positive), {sum(len(b.slices) for b in bags)} GTV "
            f"slices ({time.perf_counter() - t0:.0f} s); encoder {ck_path.name}"
        )
    rows = label_efficiency_cls(
        bags,
        encoder_state=state,
        unet_config=cfg,
        fractions=fractions,
        k=k,
        seed=seed,
        repeats=repeats,
        arms=arms,
        clinical=clinical,
        suvmax=str(ck.input.get("modality")) == "PT",
        pooling=pooling,
        steps=steps,
        log=log,
    )
    summary = summarise_cls(rows, n_boot=n_boot, seed=seed)
    doc = {
        "format": "medlens-transfer-cls/1",
        "settings": {
            "cohort": str(cohort_csv),
            "checkpoint": str(ck_path),
            "checkpoint_sha256": sha256_file(ck_path),
            "label": label,
            "fractions": [float(f) for f in fractions],
            "folds": k,
            "seed": seed,
            "repeats": repeats,
            "arms": list(arms),
            "clinical": clinical,
            "clinical_columns": list(CLINICAL_COLUMNS) if clinical else [],
            "pooling": pooling,
            "steps": steps,
            "n_bootstrap": n_boot,
        },
        "n_patients": len(bags),
        "n_positive": int(sum(b.label for b in bags)),
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "predictions": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "transfer_cls.csv", rows_to_csv(table_rows(summary)))
    atomic_write_text(out / "transfer_cls.json", json.dumps(doc, indent=2))
    atomic_write_text(out / "transfer_cls.md", markdown_table(summary) + "\n")
    return doc
