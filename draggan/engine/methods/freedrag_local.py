"""FreeDrag, keeping the rest still: the freedrag-ms method, and while no mask is painted the keep-the-rest
term (`locality.py`: the official fixed-region term with an automatic mask on the coarse block, weight
`keep_lambda`), for less collateral change away from the drag."""

from __future__ import annotations

from .freedrag_ms import FreeDrag


class FreeDragLocal(FreeDrag):
    """FreeDrag's tracking and motion supervision, plus the keep-the-rest term."""

    name = "freedrag-local"
    label = "FreeDrag, keeping the rest still"
    help = ("FreeDrag, keeping the rest still: the same, holding the image away from the drag where it was "
            "(unless you paint a mask): much less change elsewhere when you drag several points of one area; a "
            "single point that needs the whole face to move barely moves.")
    keep_lambda = 20.0
