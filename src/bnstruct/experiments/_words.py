"""Plain-language pieces of a claim's summary that several claims share (the ``why`` of an
"almost all layers" check). The claim modules write their own ``key``, ``bound``, ``checked``
and ``why`` (see :class:`~bnstruct.experiments._records.Claim`); nothing is parsed from text.
"""

from __future__ import annotations

from ._statistics import MAX_OFF_GROWTH, ON_MIN, AlmostAll

__all__ = ["almost_all_why", "almost_all_key", "almost_all_bound"]


def almost_all_why(aa: AlmostAll, what: str) -> list[str]:
    """Why an "almost all layers" check failed, one phrase per failed part (``what``: the
    property, e.g. ``"the weight structure"``); [] when it passed."""
    out = []
    if not aa.growth_ok:
        out.append(f"the number of layers off {what} grows with depth (slope "
                   f"{aa.slope:+.2f} ± {aa.slope_err:.2f} per unit of L; the slope plus two "
                   f"standard errors must stay below {MAX_OFF_GROWTH:g})")
    if not aa.deepest_ok:
        out.append(f"at the deepest L = {aa.deepest} a net has only "
                   f"{aa.deepest_min_fraction:.0%} of its layers on {what} (needs "
                   f"{ON_MIN:.0%})")
    return out


def almost_all_key(aa: AlmostAll) -> str:
    """The two numbers of an "almost all layers" check, one line: the slope of the count of
    layers off the property against L (± SE) and the smallest on-fraction at the deepest L."""
    return (f"off-slope {aa.slope:+.2f} ± {aa.slope_err:.2f}; on "
            f"{aa.deepest_min_fraction:.2f} at L={aa.deepest}")


def almost_all_bound() -> str:
    return f"off-slope + 2 SE < {MAX_OFF_GROWTH:g}; on-fraction >= {ON_MIN:g}"
