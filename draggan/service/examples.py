"""Ready example drags for the page's first minute: a model, a seed and handle → target pairs.

Each `Example` is applied by loading `model` at (`seed`, `psi`) and setting its points; the visitor then presses
Start. Points are (x, y) pixels of the model's image. The cartoon examples sit on real features of the bundled
`cartoon-faces-128` images at those seeds (found with its keypoint judge, `checkpoints/cartoon-faces-keypoints-128`,
and checked by eye); the FFHQ-512 ones use the FFHQ alignment's fixed geometry (eyes near y = 0.47 H, mouth near
y = 0.72 H), which every aligned face shares. An example is offered only when its model is available here.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from .state import Point


@dataclasses.dataclass(frozen=True)
class Example:
    """One example drag: what the button says, the model (zoo key) and latent, and the point pairs."""

    label: str
    model: str
    seed: int
    handles: tuple[Point, ...]
    targets: tuple[Point, ...]
    psi: float = 0.7

    def __post_init__(self) -> None:
        if not self.handles or len(self.handles) != len(self.targets):
            raise ValueError(f"example {self.label!r}: needs as many targets as handles, at least one")


EXAMPLES: tuple[Example, ...] = (
    Example("Smile", "cartoon-faces-128", 3, handles=((61, 82), (83, 82)), targets=((55, 76), (89, 76))),
    Example("Eyes apart", "cartoon-faces-128", 5, handles=((59, 57), (85, 58)), targets=((52, 57), (92, 58))),
    Example("Open the mouth", "cartoon-faces-128", 5, handles=((70, 94),), targets=((70, 104),)),
    Example("Smile (FFHQ)", "ffhq-512", 0, handles=((212, 370), (300, 370)), targets=((200, 352), (312, 352))),
    Example("Longer chin (FFHQ)", "ffhq-512", 0, handles=((256, 440),), targets=((256, 475),)),
)


def offered(available: Iterable[str], examples: Iterable[Example] = EXAMPLES) -> list[Example]:
    """The examples whose model is among the `available` model sources, in their order."""
    have = set(available)
    return [e for e in examples if e.model in have]
