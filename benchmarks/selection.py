"""The validation point RecBole's early stopping keeps, shared by the suite's stopping
section and bench_sequential_gpu."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional


def kept_validation(
    points: List[Dict[str, Any]],
    score: Callable[[Dict[str, Any]], float],
    patience: Optional[int] = None,
) -> Optional[Dict[str, Any]]:
    """The point whose checkpoint RecBole keeps with ``stopping_step=patience`` (None: the
    run never stops early). A score >= the best so far becomes the best (so the last of
    equal maxima wins); the run stops once ``patience + 1`` validations in a row fall
    below it. None when there are no points."""
    if not points:
        return None
    best, chosen, waited = float("-inf"), points[0], 0
    for point in points:
        if score(point) >= best:
            best, chosen, waited = score(point), point, 0
        else:
            waited += 1
            if patience is not None and waited > patience:
                break
    return chosen
