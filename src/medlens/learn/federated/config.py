"""The federation's configuration (YAML): task, rounds, strategy, privacy, sites, output.

Unknown keys and wrong types are refused with the key's path, what was expected and what was found.
Relative paths (sites' data, radiomics settings, output) are relative to the YAML file's folder.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError

__all__ = ["DEFAULTS", "FLConfig", "load_fl_config"]

DEFAULTS: dict[str, Any] = {
    "name": "federation",
    "task": "radiomics",  # radiomics | unet
    "rounds": 20,
    "strategy": "fedavg",  # fedavg | fedprox
    "proximal_mu": 0.0,
    "min_sites": 2,
    "wait_for_sites_s": 120.0,
    "round_timeout_s": 300.0,
    "resume": True,
    "seed": 0,
    "sites": [],  # [{id, data}] for `medlens fl simulate`
    "output": {"dir": "fl-run"},
    "server": {"host": "127.0.0.1", "port": 19191},
    "privacy": {
        "mode": "none",  # none | local (DP-SGD at every site) | central (server-side clipping + noise)
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,  # local: per-sample gradient clipping norm
        "batch_size": 8,  # local: expected Poisson batch size
        "clipping_norm": 1.0,  # central: clipping norm of each site's update
        "central_clipping": "server",  # central: server (the server clips each update) | client (each site clips)
        "delta": 1e-5,
    },
    # SecAgg+ (Flower's SecAggPlusWorkflow + secaggplus_mod): the server only learns the sum of the updates
    "secure_aggregation": {
        "enabled": False,
        "num_shares": 3,  # shares of each site's secrets (neighbours incl. itself); >= 3
        "reconstruction_threshold": 2,  # shares needed to rebuild a secret; 2 <= t < num_shares, t <= min_sites
        "clipping_range": 8.0,  # every weighted parameter is clipped to [-c, c] before quantisation
        "quantization_range": 4194304,  # 2**22 levels over [-c, c]
        "max_weight": None,  # largest site weight (None: the largest site's case count; 1 with central DP)
        "timeout_s": 300.0,  # per protocol stage
    },
    "radiomics": {
        "settings": None,  # path to radiomics settings YAML (e.g. sts-pet-radiomics.yaml)
        "roi": "GTV_Mass_PET",
        "outcome": "lung_metastasis",
        "n_features": 5,
        "folds": 5,
        "harmonise": False,  # False | combat | location-scale (site = batch)
        "C": 1.0,
        "local_steps": 5,
        "learning_rate": 0.5,
    },
    "unet": {
        "roi": "GTV_Mass_PET",
        "local_epochs": 1,
        "learning_rate": 2e-3,
        "batch_size": 32,
        "holdout": 3,
        "evaluate_every": 0,  # 0: only after the last round
        "architecture": {},  # UNetConfig overrides (channels, strides, ...)
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "task": (str,),
    "rounds": (int,),
    "strategy": (str,),
    "proximal_mu": (int, float),
    "min_sites": (int,),
    "wait_for_sites_s": (int, float),
    "round_timeout_s": (int, float),
    "resume": (bool,),
    "seed": (int,),
    "sites": (list,),
    "enabled": (bool,),
    "num_shares": (int,),
    "reconstruction_threshold": (int,),
    "clipping_range": (int, float),
    "quantization_range": (int,),
    "timeout_s": (int, float),
    "central_clipping": (str,),
}

MODULUS_RANGE = 2**32  # SecAgg+ masks are uniform in [0, 2**32) (Flower's default modulus_range)


def _merge(base: dict[str, Any], over: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise InputError(f"{source}: unknown key {where}{k}; expected one of {', '.join(sorted(base))}")
        if isinstance(base[k], dict) and k != "architecture":
            if not isinstance(v, dict):
                raise InputError(f"{source}: {where}{k} must be a mapping, got {type(v).__name__}")
            out[k] = _merge(base[k], v, f"{where}{k}.", source)
        else:
            t = _TYPES.get(k)
            if t is not None and (not isinstance(v, t) or (isinstance(v, bool) and bool not in t)):
                names = "/".join(x.__name__ for x in t)
                raise InputError(f"{source}: {where}{k} must be {names}, got {v!r}")
            out[k] = v
    return out


@dataclass(frozen=True)
class FLConfig:
    """A validated federation configuration (``raw``: the merged mapping; ``base_dir``: the YAML's folder)."""

    raw: dict[str, Any]
    base_dir: Path
    source: str = "config"

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def path(self, value: str | os.PathLike[str]) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def out_dir(self) -> Path:
        return self.path(self.raw["output"]["dir"])

    def radiomics_settings(self) -> dict[str, Any]:
        """The radiomics settings mapping (the YAML named in ``radiomics.settings``), sent to every site."""
        import yaml

        ref = self.raw["radiomics"]["settings"]
        if ref is None:
            return {"name": "default"}
        p = self.path(ref)
        if not p.is_file():
            raise InputError(f"{self.source}: radiomics.settings {p} not found")
        return dict(yaml.safe_load(p.read_text()))

    def unet_config(self) -> Any:
        from medlens.segment.unet.model import UNetConfig

        return UNetConfig.from_dict(dict(self.raw["unet"]["architecture"]))

    def with_overrides(self, **over: Any) -> FLConfig:
        """A copy with top-level or dotted keys replaced (``{"privacy.mode": "local"}``), validated again."""
        raw = copy.deepcopy(self.raw)
        for k, v in over.items():
            d = raw
            parts = k.split(".")
            for p in parts[:-1]:
                d = d[p]
            d[parts[-1]] = v
        return from_mapping(raw, base_dir=self.base_dir, source=self.source)


def from_mapping(raw: Any, *, base_dir: str | os.PathLike[str], source: str = "config") -> FLConfig:
    """Validate a configuration mapping (defaults filled in)."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: a federation configuration is a mapping, got {type(raw).__name__}")
    if isinstance(raw.get("secure_aggregation"), bool):  # `secure_aggregation: true` = the defaults, on
        raw = {**raw, "secure_aggregation": {"enabled": raw["secure_aggregation"]}}
    merged = _merge(DEFAULTS, raw, "", source)
    checks = [
        ("task", ("radiomics", "unet")),
        ("strategy", ("fedavg", "fedprox")),
    ]
    for key, allowed in checks:
        if merged[key] not in allowed:
            raise InputError(f"{source}: {key} must be one of {', '.join(allowed)}, got {merged[key]!r}")
    mode = merged["privacy"]["mode"]
    if mode not in ("none", "local", "central"):
        raise InputError(f"{source}: privacy.mode must be none, local or central, got {mode!r}")
    if merged["rounds"] < 1 or merged["min_sites"] < 1:
        raise InputError(f"{source}: rounds and min_sites must be >= 1")
    clip = merged["privacy"]["central_clipping"]
    if clip not in ("server", "client"):
        raise InputError(f"{source}: privacy.central_clipping must be server or client, got {clip!r}")
    _check_secure_aggregation(merged, source)
    for i, s in enumerate(merged["sites"]):
        if (
            not isinstance(s, dict)
            or not {"id", "data"} <= set(s)
            or not set(s) <= {"id", "data", "settings", "architecture"}
        ):
            raise InputError(
                f"{source}: sites[{i}] must be a mapping with id and data (optional settings, architecture), got {s!r}"
            )
    h = merged["radiomics"]["harmonise"]
    if h not in (False, None, "combat", "location-scale"):
        raise InputError(f"{source}: radiomics.harmonise must be false, combat or location-scale, got {h!r}")
    return FLConfig(merged, Path(base_dir).resolve(), source)


def _check_secure_aggregation(merged: dict[str, Any], source: str) -> None:
    sa = merged["secure_aggregation"]
    if not sa["enabled"]:
        return
    n, t = sa["num_shares"], sa["reconstruction_threshold"]
    where = f"{source}: secure_aggregation"
    if n < 3:
        raise InputError(
            f"{where}.num_shares must be >= 3 (SecAgg+ splits each site's secrets into that many shares), got {n}"
        )
    if not 2 <= t < n:
        raise InputError(
            f"{where}.reconstruction_threshold must be >= 2 and < num_shares ({n}), got {t}; "
            "a larger threshold protects more (t > num_shares / 2 recommended), a smaller one tolerates more dropouts"
        )
    if merged["min_sites"] < max(2, t):
        raise InputError(
            f"{where}: min_sites ({merged['min_sites']}) must be >= 2 and >= reconstruction_threshold ({t}): "
            "a SecAgg+ round with fewer sites than the threshold cannot be unmasked; "
            "raise min_sites or lower the threshold"
        )
    c, q = sa["clipping_range"], sa["quantization_range"]
    if not c > 0:
        raise InputError(f"{where}.clipping_range must be > 0, got {c}")
    if not 2 <= q < MODULUS_RANGE:
        raise InputError(f"{where}.quantization_range must be an integer in [2, 2**32), got {q}")
    w = sa["max_weight"]
    if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0):
        raise InputError(f"{where}.max_weight must be a positive number or null (automatic), got {w!r}")
    if not sa["timeout_s"] > 0:
        raise InputError(f"{where}.timeout_s must be > 0, got {sa['timeout_s']}")
    if merged["privacy"]["mode"] == "central" and merged["privacy"]["central_clipping"] == "server":
        raise InputError(
            f"{source}: privacy.mode central with central_clipping: server clips each site's update at the server, "
            "which needs the updates in the clear; secure aggregation hides them. Set privacy.central_clipping: client "
            "(each site clips its own update, the server adds the noise to the securely aggregated sum)"
        )


def load_fl_config(path: str | os.PathLike[str]) -> FLConfig:
    """Read and validate a federation YAML."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"federation config {p} not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc})") from exc
    return from_mapping(raw or {}, base_dir=p.parent, source=str(p))
