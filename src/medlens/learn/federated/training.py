"""Local training at a site: the logistic model and the lesion U-Net, with FedProx and optional DP-SGD.

Both start from the global weights the server sent and return the updated weights as named numpy
arrays. FedProx adds ``mu / 2 * ||w - w_global||^2`` to the local loss (``mu = 0`` is FedAvg). With
``dp`` set, the optimiser is Opacus' DP-SGD (:mod:`medlens.learn.federated.privacy`) and the steps'
``(noise_multiplier, sample_rate, steps)`` are returned for the site's accountant.

The U-Net is :func:`medlens.segment.unet.build_unet` of the shipped :class:`~medlens.segment.unet.UNetConfig`
(no BatchNorm: instance norm without affine parameters, which Opacus accepts), trained on the samples of
:mod:`medlens.segment.unet.train` (lesion slices plus as many lesion-free ones, random crop, flips,
intensity jitter) with its Dice + cross-entropy loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.learn._torch import keeps_torch_state

__all__ = [
    "DPSettings",
    "LocalResult",
    "logistic_arrays",
    "train_logistic",
    "train_unet",
    "unet_arrays",
    "unet_examples",
]


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD settings of a site: per-sample clipping norm, noise multiplier, batch size and δ."""

    noise_multiplier: float
    max_grad_norm: float = 1.0
    batch_size: int = 8
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0 or self.max_grad_norm <= 0 or self.batch_size < 1:
            raise InputError(
                "dp needs noise_multiplier >= 0, max_grad_norm > 0 and batch_size >= 1; got "
                f"{self.noise_multiplier}, {self.max_grad_norm}, {self.batch_size}"
            )


@dataclass
class LocalResult:
    """Updated weights, number of training examples, mean loss and the DP steps taken (may be empty)."""

    arrays: dict[str, np.ndarray]
    n_examples: int
    loss: float
    dp_history: list[tuple[float, float, int]]


def _state_arrays(net: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def _load(net: Any, arrays: Mapping[str, np.ndarray], what: str) -> None:
    import torch

    own = net.state_dict()
    missing = [k for k in own if k not in arrays]
    extra = [k for k in arrays if k not in own]
    wrong = [
        (k, tuple(np.shape(arrays[k])), tuple(v.shape))
        for k, v in own.items()
        if k in arrays and tuple(np.shape(arrays[k])) != tuple(v.shape)
    ]
    if missing or extra or wrong:
        parts = []
        if wrong:
            k, got, exp = wrong[0]
            parts.append(f"layer {k} is {got} in the global model but {exp} here")
        if missing:
            parts.append(
                f"{len(missing)} layers of this site's model are not in the global model (first: {missing[0]})"
            )
        if extra:
            parts.append(f"{len(extra)} layers of the global model are unknown here (first: {extra[0]})")
        raise InputError(f"{what}: the global model does not match this site's architecture: " + "; ".join(parts))
    net.load_state_dict({k: torch.as_tensor(np.asarray(arrays[k])) for k in own})


def _prox(net: Any, global_params: list[Any], mu: float) -> Any:
    return 0.5 * mu * sum(((p - g) ** 2).sum() for p, g in zip(net.parameters(), global_params))


# ---------------------------------------------------------------------------- logistic model
def logistic_arrays(n_features: int) -> dict[str, np.ndarray]:
    """Initial weights of the logistic model: ``weight`` (1, n_features) and ``bias`` (1,), zeros."""
    return {"weight": np.zeros((1, n_features), np.float32), "bias": np.zeros(1, np.float32)}


def _logistic_net(n_features: int) -> Any:
    import torch

    return torch.nn.Linear(n_features, 1)


@keeps_torch_state
def train_logistic(
    arrays: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    l2: float,
    steps: int = 5,
    learning_rate: float = 0.5,
    mu: float = 0.0,
    dp: DPSettings | None = None,
    seed: int = 0,
) -> LocalResult:
    """Local steps of L2-penalised logistic regression from the global ``arrays``.

    Parameters
    ----------
    X, y
        The site's training rows (already standardised, selected features) and 0/1 outcomes.
    l2
        Penalty ``l2 / 2 * ||weight||^2`` on the mean log-loss (``1 / (C n_total)`` matches scikit-learn's
        ``LogisticRegression(C)`` on the pooled ``n_total`` rows).
    steps
        Full-batch gradient steps without DP; with DP, local epochs of Poisson-sampled batches.
    mu
        FedProx proximal weight (0: FedAvg).
    """
    import torch

    torch.manual_seed(seed)
    X = np.asarray(X, np.float32)
    y = np.asarray(y, np.float32)
    net = _logistic_net(X.shape[1])
    _load(net, arrays, "logistic model")
    g = [p.detach().clone() for p in net.parameters()]
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    bce = torch.nn.BCEWithLogitsLoss()
    history: list[tuple[float, float, int]] = []
    losses: list[float] = []
    if dp is None:
        opt = torch.optim.SGD(net.parameters(), lr=learning_rate)
        for _ in range(steps):
            opt.zero_grad()
            loss = bce(net(xt)[:, 0], yt) + 0.5 * l2 * (net.weight**2).sum() + _prox(net, g, mu)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    else:
        model, opt, loader, engine = _make_private(net, xt, yt[:, None], dp, learning_rate, seed)
        for _ in range(steps):
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                opt.zero_grad()
                loss = bce(model(xb)[:, 0], yb[:, 0]) + 0.5 * l2 * (model._module.weight**2).sum()
                if mu:
                    loss = loss + _prox(model._module, g, mu)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        history = [(float(a), float(b), int(c)) for a, b, c in engine.accountant.history]
        net = model._module
    return LocalResult(_state_arrays(net), len(X), float(np.mean(losses)) if losses else float("nan"), history)


def _make_private(net: Any, x: Any, y: Any, dp: DPSettings, lr: float, seed: int) -> tuple[Any, Any, Any, Any]:
    import torch
    from opacus import PrivacyEngine

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=min(dp.batch_size, len(x)), shuffle=False
    )
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    gen = torch.Generator().manual_seed(seed)
    model, opt, loader = engine.make_private(
        module=net,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
        noise_generator=gen,
    )
    return model, opt, loader, engine


def predict_logistic(arrays: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Probabilities of the logistic model (numpy, no torch needed)."""
    z = np.asarray(X, np.float64) @ np.asarray(arrays["weight"], np.float64)[0] + float(np.asarray(arrays["bias"])[0])
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------- U-Net
@keeps_torch_state
def unet_arrays(config: Any, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Initial U-Net weights (``build_unet(config)`` with torch seeded by ``seed``)."""
    import torch

    from medlens.segment.unet.model import build_unet

    torch.manual_seed(seed)
    return _state_arrays(build_unet(config))


@keeps_torch_state
def train_unet(
    arrays: Mapping[str, np.ndarray],
    cases: Sequence[Any],
    config: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    mu: float = 0.0,
    dp: DPSettings | None = None,
    seed: int = 0,
) -> LocalResult:
    """Local epochs of the U-Net recipe of :mod:`medlens.segment.unet.train` from the global ``arrays``.

    ``cases`` are :class:`medlens.segment.unet.Case` (PET in SUVbw with the expert mask). Adam
    (lr ``learning_rate``) without DP; DP-SGD uses Opacus' DP optimiser around Adam, one
    Poisson-sampled pass per epoch.
    """
    import torch
    from monai.losses import DiceCELoss

    from medlens.segment.unet.model import build_unet
    from medlens.segment.unet.train import _augment, _samples_2d, _samples_3d, _scaled

    if not cases:
        raise InputError("train_unet: the site has no training cases")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_unet(config)
    _load(net, arrays, "U-Net")
    g = [p.detach().clone() for p in net.parameters()]
    loss_fn = DiceCELoss(sigmoid=True)
    data = [_scaled(c, config) for c in cases]
    losses: list[float] = []
    history: list[tuple[float, float, int]] = []
    n_seen = 0
    opt = None if dp is not None else torch.optim.Adam(net.parameters(), lr=learning_rate)
    for _ in range(epochs):
        xs, ys = _samples_2d(data, config, rng) if config.spatial_dims == 2 else _samples_3d(data, config, rng)
        xs, ys = _augment(xs, ys, rng)
        n_seen = max(n_seen, len(xs))
        xt = torch.from_numpy(np.ascontiguousarray(xs))
        yt = torch.from_numpy(np.ascontiguousarray(ys).astype(np.float32))
        net.train()
        if dp is None:
            assert opt is not None
            order = rng.permutation(len(xs))
            for i in range(0, len(order), batch_size):
                b = torch.from_numpy(order[i : i + batch_size])
                opt.zero_grad()
                loss = loss_fn(net(xt[b]), yt[b]) + (_prox(net, g, mu) if mu else 0.0)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        else:
            from opacus import PrivacyEngine

            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(xt, yt), batch_size=min(dp.batch_size, len(xt))
            )
            engine = PrivacyEngine(accountant="rdp")
            model, dpopt, loader = engine.make_private(
                module=net,
                optimizer=torch.optim.Adam(net.parameters(), lr=learning_rate),
                data_loader=loader,
                noise_multiplier=dp.noise_multiplier,
                max_grad_norm=dp.max_grad_norm,
                poisson_sampling=True,
                noise_generator=torch.Generator().manual_seed(seed),
            )
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                dpopt.zero_grad()
                loss = loss_fn(model(xb), yb) + (_prox(model._module, g, mu) if mu else 0.0)
                loss.backward()
                dpopt.step()
                losses.append(float(loss.detach()))
            history += [(float(a), float(b), int(c)) for a, b, c in engine.accountant.history]
            model.remove_hooks() if hasattr(model, "remove_hooks") else None
            net = model._module
    net.eval()
    return LocalResult(_state_arrays(net), n_seen, float(np.mean(losses)) if losses else float("nan"), history)


def unet_examples(cases: Sequence[Any], config: Any) -> int:
    """Training samples one local epoch of :func:`train_unet` draws from ``cases`` (its FedAvg weight).

    2D: every lesion slice plus as many lesion-free ones (at least one) per case; 3D: 8 crops per case.
    """
    if config.spatial_dims != 2:
        return 8 * len(cases)
    n = 0
    for c in cases:
        y = np.asarray(c.mask.array, bool)
        pos = int(y.any(axis=(1, 2)).sum())
        n += pos + min(y.shape[0] - pos, max(1, pos))
    return n


def unet_dice(arrays: Mapping[str, np.ndarray], cases: Sequence[Any], config: Any) -> list[float]:
    """Dice of the U-Net (weights ``arrays``) on each case: sliding-window inference, threshold, largest component."""
    from medlens.segment import metrics
    from medlens.segment.unet.infer import postprocess, predict_probability
    from medlens.segment.unet.model import build_unet

    net = build_unet(config)
    _load(net, arrays, "U-Net")
    net.eval()
    out = []
    import warnings

    for c in cases:
        mask = postprocess(c.image, predict_probability(c.image, net, config), config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.EmptyMaskWarning)
            out.append(float(metrics.evaluate_case(mask, c.mask)["dice"]))
    return out
