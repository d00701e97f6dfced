"""Lung-RADS v2022 assessment categories, with the rule trail that produced each category.

The size rules are data (:data:`SIZE_TABLE`), one row per line of the published table, not a cascade of
``if`` statements: a row gives the nodule type, the exam status it applies to (baseline, new, growing),
half-open size intervals ``[low, high)`` in millimetres of mean diameter (total and, for part-solid
nodules, of the solid component) and the category. Every row that matches is put in the trail; the nodule
gets the highest matching category (the guideline assigns the most suspicious finding).

Reference
---------
American College of Radiology. *Lung-RADS v2022* (released November 2022); summarised in
J. Christensen et al., "ACR Lung-RADS v2022: Assessment Categories and Management Recommendations",
J Am Coll Radiol 2024;21(3):473-488, doi:10.1016/j.jacr.2023.09.009 (also CHEST 2024;165(3):738-753).

Published thresholds encoded here (mean diameter = (long + short axis) / 2, to 0.1 mm):

* solid, baseline: < 6 mm -> 2; 6 to < 8 -> 3; 8 to < 15 -> 4A; >= 15 -> 4B.
* solid, new: < 4 mm -> 2; 4 to < 6 -> 3; 6 to < 8 -> 4A; >= 8 -> 4B.
* solid, growing: < 8 mm -> 4A; >= 8 -> 4B.
* part-solid, baseline: total < 6 mm -> 2; total >= 6 with solid component < 6 -> 3; solid 6 to < 8 -> 4A;
  solid >= 8 -> 4B.
* part-solid, new: total < 6 mm -> 3; new solid component < 4 mm -> 4A, >= 4 mm -> 4B.
* part-solid, growing (solid component new or growing): solid < 4 mm -> 4A; >= 4 mm -> 4B.
* non-solid (GGN): < 30 mm -> 2; >= 30 mm at baseline or new -> 3; >= 30 mm unchanged or slowly growing -> 2.
* juxtapleural (solid, smooth margins, oval/lentiform/triangular), < 10 mm at baseline or new -> 2.
* airway: subsegmental (baseline, new or stable) -> 2; segmental or more proximal at baseline or new -> 4A,
  stable or growing at the 3-month follow-up -> 4B.
* atypical cysts: growing cystic component of a thick-walled cyst -> 3; thick-walled or multilocular at
  baseline, or a cyst becoming multilocular -> 4A; thick-walled with growing wall thickness/nodularity,
  growing multilocular, or multilocular with increased loculation or new/increased opacity -> 4B.
* benign calcification (complete, central, popcorn, concentric rings) or fat -> 1.
* stepped management: a category 3 nodule stable or decreased at its 6-month follow-up -> 2; a 4A nodule
  stable or decreased at its 3-month follow-up -> 3 (not for airway nodules). A nodule crossing a higher
  size threshold is reclassified by size even without growth.
* slow growth over several screening exams (solid or part-solid) -> 4B; a 3 or 4 with additional features
  that raise suspicion -> 4X; exam incomplete, prior being located, or suspected infection -> 0; ``S`` is
  added for clinically significant findings unrelated to lung cancer.
* growth: an increase in mean diameter of more than 1.5 mm within 12 months
  (:func:`medlens.clinical.measure.growth`).

Interpretations where the table is silent (stated in the trail): a part-solid nodule is "growing" when its
solid component is new or growing; a non-solid nodule >= 30 mm that grows faster than "slowly" is treated
like a new one (category 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from medlens.clinical.measure import round_tenth
from medlens.core.errors import InputError

__all__ = [
    "SIZE_TABLE",
    "Airway",
    "Category",
    "CystFinding",
    "ExamAssessment",
    "LungRADSResult",
    "Nodule",
    "NoduleType",
    "RuleHit",
    "SizeRule",
    "Status",
    "assess_exam",
    "assess_nodule",
]

INF = math.inf


class NoduleType(StrEnum):
    """Nodule composition (attenuation)."""

    SOLID = "solid"
    PART_SOLID = "part_solid"
    GROUND_GLASS = "ground_glass"  #: non-solid nodule (GGN)


class Status(StrEnum):
    """The nodule at this exam, relative to the prior screening exams."""

    BASELINE = "baseline"  #: first screening exam
    NEW = "new"  #: follow-up exam, not seen before
    GROWING = "growing"  #: follow-up, mean diameter up > 1.5 mm within 12 months
    STABLE = "stable"  #: follow-up, unchanged or decreased


class Category(StrEnum):
    """Lung-RADS v2022 assessment categories, ordered by suspicion (see :attr:`rank`)."""

    C0 = "0"
    C1 = "1"
    C2 = "2"
    C3 = "3"
    C4A = "4A"
    C4B = "4B"
    C4X = "4X"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Category.C0: 0, Category.C1: 1, Category.C2: 2, Category.C3: 3, Category.C4A: 4, Category.C4B: 5}
_RANK[Category.C4X] = 6

#: Management recommendation per category (Lung-RADS v2022, "Management" column, abridged).
MANAGEMENT = {
    Category.C0: "Additional lung cancer screening CT images and/or comparison to prior chest CT; "
    "1-3 month LDCT for findings suggesting infection or inflammation",
    Category.C1: "Continue annual screening with LDCT in 12 months",
    Category.C2: "Continue annual screening with LDCT in 12 months",
    Category.C3: "6-month LDCT",
    Category.C4A: "3-month LDCT; PET/CT may be considered if there is a solid nodule or component >= 8 mm",
    Category.C4B: "Diagnostic chest CT with or without contrast; PET/CT may be considered if there is a solid "
    "nodule or component >= 8 mm; tissue sampling; referral for further clinical evaluation",
    Category.C4X: "As 4B: diagnostic chest CT, PET/CT, tissue sampling and/or referral",
}


class Airway(StrEnum):
    """Airway (endobronchial/endotracheal) nodule location."""

    SUBSEGMENTAL = "subsegmental"
    SEGMENTAL_OR_PROXIMAL = "segmental_or_proximal"


class CystFinding(StrEnum):
    """Atypical pulmonary cyst findings of Lung-RADS v2022 (thin-walled unilocular cysts are not classified)."""

    THICK_WALLED_GROWING_CYSTIC_COMPONENT = "thick_walled_growing_cystic_component"
    THICK_WALLED_BASELINE = "thick_walled_baseline"
    MULTILOCULAR_BASELINE = "multilocular_baseline"
    BECOMES_MULTILOCULAR = "becomes_multilocular"
    THICK_WALLED_GROWING_WALL = "thick_walled_growing_wall"
    MULTILOCULAR_GROWING = "multilocular_growing"
    MULTILOCULAR_INCREASED_LOCULATION_OR_OPACITY = "multilocular_increased_loculation_or_opacity"


#: Category of each atypical-cyst finding (Lung-RADS v2022, categories 3, 4A and 4B).
CYST_TABLE: dict[CystFinding, Category] = {
    CystFinding.THICK_WALLED_GROWING_CYSTIC_COMPONENT: Category.C3,
    CystFinding.THICK_WALLED_BASELINE: Category.C4A,
    CystFinding.MULTILOCULAR_BASELINE: Category.C4A,
    CystFinding.BECOMES_MULTILOCULAR: Category.C4A,
    CystFinding.THICK_WALLED_GROWING_WALL: Category.C4B,
    CystFinding.MULTILOCULAR_GROWING: Category.C4B,
    CystFinding.MULTILOCULAR_INCREASED_LOCULATION_OR_OPACITY: Category.C4B,
}


@dataclass(frozen=True)
class SizeRule:
    """One row of the size table: matches when ``total_mm`` and ``solid_mm`` fall in ``[low, high)``."""

    rule_id: str
    nodule_type: NoduleType
    statuses: frozenset[Status]
    total_mm: tuple[float, float]
    solid_mm: tuple[float, float] | None
    category: Category
    text: str

    def matches(self, nodule_type: NoduleType, status: Status, total: float, solid: float | None) -> bool:
        if nodule_type != self.nodule_type or status not in self.statuses:
            return False
        if not self.total_mm[0] <= total < self.total_mm[1]:
            return False
        if self.solid_mm is not None:
            if solid is None:
                return False
            return self.solid_mm[0] <= solid < self.solid_mm[1]
        return True


def _rule(rid: str, t: NoduleType, st: str, total: tuple[float, float], solid: Any, cat: str, text: str) -> SizeRule:
    statuses = frozenset(Status(s) for s in st.split("|"))
    return SizeRule(rid, t, statuses, total, solid, Category(cat), text)


_S, _P, _G = NoduleType.SOLID, NoduleType.PART_SOLID, NoduleType.GROUND_GLASS

#: The Lung-RADS v2022 size table (mean diameters in mm, intervals ``[low, high)``).
SIZE_TABLE: tuple[SizeRule, ...] = (
    _rule("solid.baseline.2", _S, "baseline", (0, 6), None, "2", "solid < 6 mm at baseline"),
    _rule("solid.baseline.3", _S, "baseline", (6, 8), None, "3", "solid >= 6 to < 8 mm at baseline"),
    _rule("solid.baseline.4A", _S, "baseline", (8, 15), None, "4A", "solid >= 8 to < 15 mm at baseline"),
    _rule("solid.baseline.4B", _S, "baseline", (15, INF), None, "4B", "solid >= 15 mm at baseline"),
    _rule("solid.new.2", _S, "new", (0, 4), None, "2", "new solid < 4 mm"),
    _rule("solid.new.3", _S, "new", (4, 6), None, "3", "new solid 4 to < 6 mm"),
    _rule("solid.new.4A", _S, "new", (6, 8), None, "4A", "new solid 6 to < 8 mm"),
    _rule("solid.new.4B", _S, "new", (8, INF), None, "4B", "new solid >= 8 mm"),
    _rule("solid.growing.4A", _S, "growing", (0, 8), None, "4A", "growing solid < 8 mm"),
    _rule("solid.growing.4B", _S, "growing", (8, INF), None, "4B", "growing solid >= 8 mm"),
    _rule("part_solid.baseline.2", _P, "baseline", (0, 6), None, "2", "part-solid < 6 mm total at baseline"),
    _rule(
        "part_solid.baseline.3",
        _P,
        "baseline",
        (6, INF),
        (0, 6),
        "3",
        "part-solid >= 6 mm total, solid component < 6 mm",
    ),
    _rule(
        "part_solid.baseline.4A",
        _P,
        "baseline",
        (6, INF),
        (6, 8),
        "4A",
        "part-solid >= 6 mm total, solid component >= 6 to < 8 mm",
    ),
    _rule("part_solid.baseline.4B", _P, "baseline", (0, INF), (8, INF), "4B", "part-solid, solid component >= 8 mm"),
    _rule("part_solid.new.3", _P, "new", (0, 6), None, "3", "new part-solid < 6 mm total"),
    _rule(
        "part_solid.new.4A", _P, "new", (6, INF), (0, 4), "4A", "part-solid >= 6 mm with a new solid component < 4 mm"
    ),
    _rule("part_solid.new.4B", _P, "new", (0, INF), (4, INF), "4B", "part-solid with a new solid component >= 4 mm"),
    _rule("part_solid.growing.4A", _P, "growing", (0, INF), (0, 4), "4A", "part-solid, growing solid component < 4 mm"),
    _rule(
        "part_solid.growing.4B", _P, "growing", (0, INF), (4, INF), "4B", "part-solid, growing solid component >= 4 mm"
    ),
    _rule("ggn.2", _G, "baseline|new|growing|stable", (0, 30), None, "2", "non-solid < 30 mm"),
    _rule("ggn.baseline_new.3", _G, "baseline|new", (30, INF), None, "3", "non-solid >= 30 mm at baseline or new"),
    _rule("ggn.stable.2", _G, "stable", (30, INF), None, "2", "non-solid >= 30 mm, unchanged or slowly growing"),
    _rule(
        "ggn.growing.3",
        _G,
        "growing",
        (30, INF),
        None,
        "3",
        "non-solid >= 30 mm growing (interpretation: treated like a new one; the table covers 'slowly growing' only)",
    ),
)

#: Juxtapleural nodules with benign morphology (v2022): below this mean diameter they are category 2.
JUXTAPLEURAL_MAX_MM = 10.0


@dataclass(frozen=True)
class Nodule:
    """What Lung-RADS needs to know about one finding.

    Attributes
    ----------
    nodule_type
        Solid, part-solid or non-solid (GGN).
    mean_diameter_mm
        Mean of long and short axis (total nodule), rounded to 0.1 mm.
    status
        Baseline, new, growing or stable relative to prior exams.
    solid_mean_diameter_mm
        Mean diameter of the solid component (part-solid nodules only).
    prior_category
        Category given at the previous exam; needed for stable solid/part-solid nodules (stepped management).
    benign_calcification, fat_containing
        Complete, central, popcorn or concentric-ring calcification, or macroscopic fat: category 1.
    juxtapleural_benign
        Juxtapleural (incl. perifissural), solid, smooth margins, oval/lentiform/triangular.
    airway
        Location of an airway nodule, or ``None``.
    cyst
        An atypical pulmonary cyst finding, or ``None``.
    slow_growth_multiple_exams
        Growth over several screening exams that never reached 1.5 mm within 12 months (solid/part-solid).
    suspicious_features
        Additional features raising suspicion (spiculation, lymphadenopathy, ...): a 3 or 4 becomes 4X.
    label
        Free text naming the finding in the trail (``"nodule 1, RUL"``).
    """

    nodule_type: NoduleType = NoduleType.SOLID
    mean_diameter_mm: float = 0.0
    status: Status = Status.BASELINE
    solid_mean_diameter_mm: float | None = None
    prior_category: Category | None = None
    benign_calcification: bool = False
    fat_containing: bool = False
    juxtapleural_benign: bool = False
    airway: Airway | None = None
    cyst: CystFinding | None = None
    slow_growth_multiple_exams: bool = False
    suspicious_features: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodule_type", _enum(NoduleType, self.nodule_type, "nodule_type"))
        object.__setattr__(self, "status", _enum(Status, self.status, "status"))
        if self.prior_category is not None:
            object.__setattr__(self, "prior_category", _enum(Category, self.prior_category, "prior_category"))
        if self.airway is not None:
            object.__setattr__(self, "airway", _enum(Airway, self.airway, "airway"))
        if self.cyst is not None:
            object.__setattr__(self, "cyst", _enum(CystFinding, self.cyst, "cyst"))
        d = float(self.mean_diameter_mm)
        if not math.isfinite(d) or d < 0:
            raise InputError(f"mean_diameter_mm must be a finite size >= 0 mm, got {self.mean_diameter_mm}")
        if self.nodule_type == NoduleType.PART_SOLID and self.cyst is None and self.airway is None:
            s = self.solid_mean_diameter_mm
            if s is None:
                raise InputError(
                    "a part-solid nodule needs solid_mean_diameter_mm (mean diameter of its solid component); "
                    "measure it with medlens.clinical.measure.measure_lesion"
                )
            if not math.isfinite(s) or s < 0 or s > d + 1e-9:
                raise InputError(
                    f"solid_mean_diameter_mm must lie in 0..mean_diameter_mm ({d} mm), got {s} mm: the solid "
                    "component cannot be larger than the nodule"
                )


def _enum(kind: Any, value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError as exc:
        raise InputError(f"{name} must be one of {[e.value for e in kind]}, got {value!r}") from exc


@dataclass(frozen=True)
class RuleHit:
    """One step of the trail: the rule, its category, and the measured values it was applied to."""

    rule_id: str
    category: Category | None
    text: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "category": None if self.category is None else self.category.value,
            "text": self.text,
            "values": dict(self.values),
        }

    def __str__(self) -> str:
        vals = ", ".join(f"{k}={v}" for k, v in self.values.items())
        cat = "" if self.category is None else f" -> {self.category.value}"
        return f"[{self.rule_id}] {self.text}" + (f" ({vals})" if vals else "") + cat


@dataclass(frozen=True)
class LungRADSResult:
    """Category of one nodule and the trail of rules behind it."""

    category: Category
    trail: tuple[RuleHit, ...]
    label: str = ""

    @property
    def management(self) -> str:
        return MANAGEMENT[self.category]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "category": self.category.value,
            "management": self.management,
            "trail": [h.to_dict() for h in self.trail],
        }


def _highest(cats: Iterable[Category]) -> Category:
    return max(cats, key=lambda c: c.rank)


def _size_hits(n: Nodule, status: Status) -> list[RuleHit]:
    total = round_tenth(float(n.mean_diameter_mm))
    solid = None if n.solid_mean_diameter_mm is None else round_tenth(float(n.solid_mean_diameter_mm))
    values: dict[str, Any] = {"type": n.nodule_type.value, "status": status.value, "mean_diameter_mm": total}
    if n.nodule_type == NoduleType.PART_SOLID:
        values["solid_mean_diameter_mm"] = solid
    return [
        RuleHit(r.rule_id, r.category, r.text, dict(values))
        for r in SIZE_TABLE
        if r.matches(n.nodule_type, status, total, solid)
    ]


def assess_nodule(nodule: Nodule) -> LungRADSResult:
    """Lung-RADS v2022 category of one finding, with the rules that gave it.

    Parameters
    ----------
    nodule
        The finding (:class:`Nodule`): type, mean diameter(s) in mm, status and descriptors.

    Returns
    -------
    LungRADSResult
        ``category`` (the highest category among the matching rules, after the 4B/4X modifiers) and
        ``trail`` (every rule consulted, with the measured values it saw).
    """
    n = nodule
    trail: list[RuleHit] = []
    if n.benign_calcification or n.fat_containing:
        what = "benign calcification" if n.benign_calcification else "fat-containing"
        return LungRADSResult(Category.C1, (RuleHit("benign", Category.C1, f"{what} nodule", {}),), n.label)
    if n.cyst is not None:
        cat = CYST_TABLE[n.cyst]
        trail.append(RuleHit(f"cyst.{n.cyst.value}", cat, "atypical pulmonary cyst", {"cyst": n.cyst.value}))
        return _modifiers(n, cat, trail)
    if n.airway is not None:
        if n.airway == Airway.SUBSEGMENTAL:
            hit = RuleHit("airway.subsegmental", Category.C2, "subsegmental airway nodule", {"status": n.status.value})
        elif n.status in (Status.BASELINE, Status.NEW):
            hit = RuleHit(
                "airway.segmental.baseline_new",
                Category.C4A,
                "segmental or more proximal airway nodule at baseline or new",
                {"status": n.status.value},
            )
        else:
            hit = RuleHit(
                "airway.segmental.persistent",
                Category.C4B,
                "segmental or more proximal airway nodule stable or growing at the 3-month follow-up",
                {"status": n.status.value},
            )
        trail.append(hit)
        return _modifiers(n, hit.category or Category.C2, trail)
    if (
        n.juxtapleural_benign
        and n.nodule_type == NoduleType.SOLID
        and n.status in (Status.BASELINE, Status.NEW)
        and round_tenth(n.mean_diameter_mm) < JUXTAPLEURAL_MAX_MM
    ):
        hit = RuleHit(
            "juxtapleural.2",
            Category.C2,
            "juxtapleural solid nodule, smooth margins, oval/lentiform/triangular, < 10 mm at baseline or new",
            {"mean_diameter_mm": round_tenth(n.mean_diameter_mm), "status": n.status.value},
        )
        return _modifiers(n, Category.C2, [hit])
    if n.status == Status.STABLE and n.nodule_type != NoduleType.GROUND_GLASS:
        cat = _stable(n, trail)
    else:
        hits = _size_hits(n, n.status)
        if not hits:  # pragma: no cover - the table covers every size; a gap is a bug in SIZE_TABLE
            raise InputError(f"no Lung-RADS size rule matches {n}")
        trail.extend(hits)
        cat = _highest(h.category for h in hits if h.category is not None)
    return _modifiers(n, cat, trail)


def _stable(n: Nodule, trail: list[RuleHit]) -> Category:
    """Stepped management for unchanged solid/part-solid nodules, then re-classification by size."""
    if n.prior_category is None:
        raise InputError(
            "a stable solid or part-solid nodule needs prior_category (its category at the previous exam): "
            "Lung-RADS v2022 steps 3 -> 2 and 4A -> 3 for stable nodules"
        )
    prior = n.prior_category
    if prior == Category.C3:
        cat = Category.C2
        trail.append(RuleHit("stepped.3to2", cat, "category 3 stable or decreased at follow-up", {"prior": "3"}))
    elif prior == Category.C4A:
        cat = Category.C3
        trail.append(RuleHit("stepped.4Ato3", cat, "category 4A stable or decreased at follow-up", {"prior": "4A"}))
    elif prior in (Category.C4B, Category.C4X):
        cat = prior
        trail.append(
            RuleHit(
                "stepped.none",
                cat,
                "no v2022 step-down for 4B/4X without a benign diagnostic work-up",
                {"prior": prior.value},
            )
        )
    else:
        cat = Category.C2
        trail.append(RuleHit("stable.2", cat, "nodule unchanged since a category 1-2 exam", {"prior": prior.value}))
    # "When a nodule crosses a new size threshold ... it should be reclassified based on size."
    size_hits = _size_hits(n, Status.BASELINE)
    size_cat = _highest(h.category for h in size_hits if h.category is not None)
    if size_cat.rank > max(cat.rank, prior.rank):
        trail.extend(
            RuleHit("size_threshold." + h.rule_id, h.category, "crossed a size threshold: " + h.text, h.values)
            for h in size_hits
        )
        cat = size_cat
    return cat


def _modifiers(n: Nodule, cat: Category, trail: list[RuleHit]) -> LungRADSResult:
    if n.slow_growth_multiple_exams and n.nodule_type in (NoduleType.SOLID, NoduleType.PART_SOLID):
        if Category.C4B.rank > cat.rank:
            cat = Category.C4B
        trail.append(RuleHit("slow_growth.4B", Category.C4B, "slow growth over multiple screening exams", {}))
    if n.suspicious_features and cat.rank >= Category.C3.rank:
        cat = Category.C4X
        trail.append(RuleHit("4X", Category.C4X, "category 3 or 4 with additional features increasing suspicion", {}))
    elif n.suspicious_features:
        trail.append(RuleHit("4X.not_applicable", None, "4X applies to category 3 or 4 only", {"category": cat.value}))
    return LungRADSResult(cat, tuple(trail), n.label)


@dataclass(frozen=True)
class ExamAssessment:
    """Lung-RADS category of a whole exam: the most suspicious finding, plus the ``S`` modifier."""

    category: Category
    s_modifier: bool
    nodules: tuple[LungRADSResult, ...]
    trail: tuple[RuleHit, ...]

    @property
    def label(self) -> str:
        """The category as reported (``"4A"``, ``"2S"``)."""
        return self.category.value + ("S" if self.s_modifier else "")

    @property
    def management(self) -> str:
        return MANAGEMENT[self.category]

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.label,
            "management": self.management,
            "trail": [h.to_dict() for h in self.trail],
            "nodules": [r.to_dict() for r in self.nodules],
        }


def assess_exam(
    nodules: Sequence[Nodule],
    *,
    incomplete: bool = False,
    prior_being_located: bool = False,
    suspected_infection: bool = False,
    significant_other_findings: bool = False,
) -> ExamAssessment:
    """Lung-RADS v2022 category of a screening exam.

    Parameters
    ----------
    nodules
        Every finding; an empty sequence means no nodules (category 1).
    incomplete, prior_being_located, suspected_infection
        Category 0 conditions (part of the lungs cannot be evaluated; prior CT being located; findings
        suggesting an infectious or inflammatory process).
    significant_other_findings
        Adds the ``S`` modifier (clinically significant findings unrelated to lung cancer).
    """
    results = tuple(assess_nodule(n) for n in nodules)
    trail: list[RuleHit] = []
    zero = {
        "incomplete": incomplete,
        "prior_being_located": prior_being_located,
        "suspected_infection": suspected_infection,
    }
    if any(zero.values()):
        cat = Category.C0
        trail.append(RuleHit("exam.0", cat, "exam incomplete / prior being located / possible infection", zero))
    elif not results:
        cat = Category.C1
        trail.append(RuleHit("exam.no_nodules", cat, "no lung nodules", {}))
    else:
        worst = max(results, key=lambda r: r.category.rank)
        cat = worst.category
        trail.append(
            RuleHit(
                "exam.highest",
                cat,
                "exam category = most suspicious finding",
                {"finding": worst.label or str(results.index(worst) + 1)},
            )
        )
    if significant_other_findings:
        trail.append(RuleHit("exam.S", None, "S modifier: clinically significant other findings", {}))
    return ExamAssessment(cat, bool(significant_other_findings), results, tuple(trail))
