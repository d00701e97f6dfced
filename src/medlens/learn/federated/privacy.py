"""Differential privacy: DP-SGD per site (Opacus) and the RDP accounting of what was spent.

* Local DP-SGD (:func:`dp_train`): Opacus' :class:`~opacus.PrivacyEngine` clips every per-sample
  gradient to ``max_grad_norm`` and adds Gaussian noise ``noise_multiplier * max_grad_norm`` to the sum,
  with Poisson sampling of each batch (rate ``batch_size / n``). A site keeps the accountant's history
  ``[(noise_multiplier, sample_rate, steps), ...]`` across rounds, so the ε it reports after round ``r``
  composes all its steps so far (:func:`epsilon`, Opacus' RDP accountant).
* Central DP (the server adds noise to the clipped site updates, Flower's
  ``DifferentialPrivacyServerSideFixedClipping``): every round is one Gaussian mechanism on the sum of
  updates with no subsampling, so ε after ``r`` rounds is :func:`epsilon` of
  ``[(noise_multiplier, 1.0, r)]``. The protected unit is then a *site*, not a patient.

The privacy unit of local DP-SGD is one training sample: a patient for the radiomics model, one 2D
slice for the U-Net (a patient contributes several slices, so patient-level ε is larger; see
docs/federated.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from medlens.core.errors import InputError

__all__ = ["epsilon", "merge_history"]

History = list[tuple[float, float, int]]


def merge_history(history: Sequence[Sequence[float]]) -> History:
    """Normalise an accountant history to ``[(noise_multiplier, sample_rate, steps)]`` (consecutive equal merged)."""
    out: History = []
    for item in history:
        if len(item) != 3:
            raise InputError(f"a privacy history entry is (noise_multiplier, sample_rate, steps), got {list(item)}")
        nm, q, s = float(item[0]), float(item[1]), int(item[2])
        if out and out[-1][0] == nm and out[-1][1] == q:
            out[-1] = (nm, q, out[-1][2] + s)
        else:
            out.append((nm, q, s))
    return out


def epsilon(history: Sequence[Sequence[float]], *, delta: float) -> float:
    """ε at ``delta`` of the composed Gaussian mechanisms in ``history`` (Opacus' RDP accountant).

    Parameters
    ----------
    history
        ``[(noise_multiplier, sample_rate, steps), ...]`` as kept by :class:`opacus.accountants.RDPAccountant`.
    delta
        Target δ (e.g. 1e-5); must be in (0, 1).

    Returns
    -------
    float
        ε; ``inf`` for a step without noise; 0 for an empty history.
    """
    from opacus.accountants import RDPAccountant

    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta}")
    h = merge_history(history)
    if not h:
        return 0.0
    if any(nm <= 0 for nm, _, _ in h):
        return float("inf")
    acc = RDPAccountant()
    acc.history = list(h)
    return float(acc.get_epsilon(delta=delta))
