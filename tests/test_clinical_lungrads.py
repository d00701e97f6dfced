"""Lung-RADS v2022: every size boundary just below / at / above, each type and status, plus the descriptors.

Expected categories are written out from the published v2022 table (J Am Coll Radiol 2024;21:473-488),
independently of :data:`medlens.clinical.lungrads.SIZE_TABLE`.
"""

from __future__ import annotations

import pytest

from medlens.clinical.lungrads import (
    SIZE_TABLE,
    Airway,
    Category,
    CystFinding,
    Nodule,
    NoduleType,
    Status,
    assess_exam,
    assess_nodule,
)
from medlens.core.errors import InputError

S, P, G = "solid", "part_solid", "ground_glass"

# (type, status, total mean diameter mm, solid component mm, expected category)
CASES = [
    # solid, baseline: 6 / 8 / 15
    (S, "baseline", 0.0, None, "2"),
    (S, "baseline", 5.9, None, "2"),
    (S, "baseline", 6.0, None, "3"),
    (S, "baseline", 6.1, None, "3"),
    (S, "baseline", 7.9, None, "3"),
    (S, "baseline", 8.0, None, "4A"),
    (S, "baseline", 8.1, None, "4A"),
    (S, "baseline", 14.9, None, "4A"),
    (S, "baseline", 15.0, None, "4B"),
    (S, "baseline", 15.1, None, "4B"),
    # solid, new: 4 / 6 / 8
    (S, "new", 3.9, None, "2"),
    (S, "new", 4.0, None, "3"),
    (S, "new", 4.1, None, "3"),
    (S, "new", 5.9, None, "3"),
    (S, "new", 6.0, None, "4A"),
    (S, "new", 6.1, None, "4A"),
    (S, "new", 7.9, None, "4A"),
    (S, "new", 8.0, None, "4B"),
    (S, "new", 8.1, None, "4B"),
    # solid, growing: 8
    (S, "growing", 3.0, None, "4A"),
    (S, "growing", 7.9, None, "4A"),
    (S, "growing", 8.0, None, "4B"),
    (S, "growing", 8.1, None, "4B"),
    # part-solid, baseline: total 6; solid 6 / 8
    (P, "baseline", 5.9, 2.0, "2"),
    (P, "baseline", 6.0, 2.0, "3"),
    (P, "baseline", 6.1, 5.9, "3"),
    (P, "baseline", 9.0, 5.9, "3"),
    (P, "baseline", 9.0, 6.0, "4A"),
    (P, "baseline", 9.0, 6.1, "4A"),
    (P, "baseline", 9.0, 7.9, "4A"),
    (P, "baseline", 9.0, 8.0, "4B"),
    (P, "baseline", 9.0, 8.1, "4B"),
    # part-solid, new: total 6; solid 4
    (P, "new", 5.9, 1.0, "3"),
    (P, "new", 6.0, 3.9, "4A"),
    (P, "new", 6.1, 1.0, "4A"),
    (P, "new", 10.0, 4.0, "4B"),
    (P, "new", 10.0, 4.1, "4B"),
    (P, "new", 5.9, 4.0, "4B"),  # a new solid component >= 4 mm outranks "new < 6 mm total"
    # part-solid, growing solid component: 4
    (P, "growing", 12.0, 3.9, "4A"),
    (P, "growing", 12.0, 4.0, "4B"),
    (P, "growing", 12.0, 4.1, "4B"),
    # non-solid: 30
    (G, "baseline", 29.9, None, "2"),
    (G, "baseline", 30.0, None, "3"),
    (G, "baseline", 30.1, None, "3"),
    (G, "new", 29.9, None, "2"),
    (G, "new", 30.0, None, "3"),
    (G, "stable", 29.9, None, "2"),
    (G, "stable", 30.0, None, "2"),
    (G, "stable", 45.0, None, "2"),
    (G, "growing", 29.9, None, "2"),
    (G, "growing", 30.0, None, "3"),
]


@pytest.mark.parametrize(("kind", "status", "total", "solid", "expected"), CASES)
def test_size_boundaries(kind: str, status: str, total: float, solid: float | None, expected: str) -> None:
    res = assess_nodule(
        Nodule(
            nodule_type=NoduleType(kind), mean_diameter_mm=total, status=Status(status), solid_mean_diameter_mm=solid
        )
    )
    assert res.category == Category(expected), [str(h) for h in res.trail]
    # the trail names the deciding rule and the values it saw
    deciding = [h for h in res.trail if h.category == res.category]
    assert deciding and deciding[0].values["mean_diameter_mm"] == round(total, 1)


def test_every_table_row_is_exercised() -> None:
    hit: set[str] = set()
    for kind, status, total, solid, _ in CASES:
        res = assess_nodule(
            Nodule(
                nodule_type=NoduleType(kind),
                mean_diameter_mm=total,
                status=Status(status),
                solid_mean_diameter_mm=solid,
            )
        )
        hit.update(h.rule_id for h in res.trail)
    assert {r.rule_id for r in SIZE_TABLE} <= hit


def test_rounding_to_tenth_of_mm_is_applied_before_thresholds() -> None:
    # 5.96 mm is reported as 6.0 mm and is therefore category 3 at baseline
    assert assess_nodule(Nodule(mean_diameter_mm=5.96)).category == Category.C3
    assert assess_nodule(Nodule(mean_diameter_mm=5.94)).category == Category.C2


@pytest.mark.parametrize(
    ("prior", "size", "expected", "rule"),
    [
        ("3", 7.0, "2", "stepped.3to2"),
        ("4A", 9.0, "3", "stepped.4Ato3"),
        ("2", 5.0, "2", "stable.2"),
        ("4B", 16.0, "4B", "stepped.none"),
        # unchanged within the growth definition but now over 8 mm: reclassified by size
        ("3", 8.0, "4A", "size_threshold.solid.baseline.4A"),
    ],
)
def test_stepped_management_and_size_reclassification(prior: str, size: float, expected: str, rule: str) -> None:
    res = assess_nodule(Nodule(mean_diameter_mm=size, status=Status.STABLE, prior_category=Category(prior)))
    assert res.category == Category(expected)
    assert rule in [h.rule_id for h in res.trail]


def test_descriptors() -> None:
    assert assess_nodule(Nodule(mean_diameter_mm=20, benign_calcification=True)).category == Category.C1
    assert assess_nodule(Nodule(mean_diameter_mm=20, fat_containing=True)).category == Category.C1
    jp = Nodule(mean_diameter_mm=9.9, juxtapleural_benign=True)
    assert assess_nodule(jp).category == Category.C2
    assert assess_nodule(Nodule(mean_diameter_mm=10.0, juxtapleural_benign=True)).category == Category.C4A
    assert assess_nodule(Nodule(mean_diameter_mm=4.0, airway=Airway.SUBSEGMENTAL)).category == Category.C2
    seg = Nodule(mean_diameter_mm=4.0, airway=Airway.SEGMENTAL_OR_PROXIMAL)
    assert assess_nodule(seg).category == Category.C4A
    seg3 = Nodule(mean_diameter_mm=4.0, airway=Airway.SEGMENTAL_OR_PROXIMAL, status=Status.STABLE)
    assert assess_nodule(seg3).category == Category.C4B
    assert assess_nodule(Nodule(cyst=CystFinding.MULTILOCULAR_BASELINE)).category == Category.C4A
    assert assess_nodule(Nodule(cyst=CystFinding.THICK_WALLED_GROWING_CYSTIC_COMPONENT)).category == Category.C3
    assert assess_nodule(Nodule(cyst=CystFinding.MULTILOCULAR_GROWING)).category == Category.C4B
    slow = Nodule(
        mean_diameter_mm=5.0, status=Status.STABLE, prior_category=Category.C2, slow_growth_multiple_exams=True
    )
    assert assess_nodule(slow).category == Category.C4B
    # 4X needs a 3 or 4
    assert assess_nodule(Nodule(mean_diameter_mm=7.0, suspicious_features=True)).category == Category.C4X
    assert assess_nodule(Nodule(mean_diameter_mm=4.0, suspicious_features=True)).category == Category.C2


def test_exam_level() -> None:
    ex = assess_exam([Nodule(mean_diameter_mm=5.0, label="a"), Nodule(mean_diameter_mm=9.0, label="b")])
    assert ex.category == Category.C4A and ex.trail[0].values["finding"] == "b"
    assert assess_exam([]).category == Category.C1
    assert assess_exam([Nodule(mean_diameter_mm=9.0)], incomplete=True).category == Category.C0
    assert assess_exam([Nodule(mean_diameter_mm=3.0)], significant_other_findings=True).label == "2S"


def test_bad_input_messages() -> None:
    with pytest.raises(InputError, match="solid_mean_diameter_mm"):
        Nodule(nodule_type=NoduleType.PART_SOLID, mean_diameter_mm=8.0)
    with pytest.raises(InputError, match="cannot be larger"):
        Nodule(nodule_type=NoduleType.PART_SOLID, mean_diameter_mm=8.0, solid_mean_diameter_mm=9.0)
    with pytest.raises(InputError, match="mean_diameter_mm"):
        Nodule(mean_diameter_mm=-1.0)
    with pytest.raises(InputError, match="status must be one of"):
        Nodule(mean_diameter_mm=3.0, status="later")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="prior_category"):
        assess_nodule(Nodule(mean_diameter_mm=7.0, status=Status.STABLE))
