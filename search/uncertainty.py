"""How sure an accuracy is: a 95 % Wilson interval for k correct of n, and whether one
accuracy beats another by more than both their uncertainties."""

from __future__ import annotations

import math

Z95 = 1.959964


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy measured on n examples."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def standard_error(accuracy: float, n: int) -> float:
    """The binomial standard error of an accuracy on n examples."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n) if n > 0 else float("inf")


def half_width(accuracy: float, n: int) -> float:
    """Half the width of the 95 % interval, for a `0.812 ± 0.013` display."""
    low, high = wilson_interval(accuracy, n)
    return (high - low) / 2


def difference_margin(a: float, n_a: int, b: float, n_b: int, z: float = Z95) -> float:
    """z standard errors of the difference between accuracy a on n_a examples and b on n_b."""
    return z * math.sqrt(standard_error(a, n_a) ** 2 + standard_error(b, n_b) ** 2)


def clearly_better(a: float, n_a: int, b: float, n_b: int, z: float = Z95) -> bool:
    """Whether accuracy a beats b by more than z standard errors of their difference."""
    return a - b > difference_margin(a, n_a, b, n_b, z)
