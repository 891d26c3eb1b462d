"""The licences of the zoo's weights, and the one-line notice the app shows next to a model.

Each zoo entry's `licence` is a key of `LICENCES`. `commercial` says whether the weights may be used
commercially under that licence; the notice says so plainly, since most StyleGAN weights are NVIDIA's and
licensed for non-commercial use only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Licence:
    """A weights licence: display `name`, where its text is (`url`), and whether commercial use is allowed."""

    name: str
    url: str
    commercial: bool


LICENCES: dict[str, Licence] = {
    "mit": Licence("MIT", "https://opensource.org/license/mit", commercial=True),
    "nvidia-source-code-license-nc": Licence(
        "NVIDIA Source Code License-NC (non-commercial)",
        "https://nvlabs.github.io/stylegan2/license.html", commercial=False),
    "research-only-unstated": Licence(
        "no licence stated by the authors; trained with NVIDIA's non-commercial StyleGAN code, use for "
        "non-commercial research only", "https://github.com/NVlabs/stylegan2-ada-pytorch/blob/main/LICENSE.txt",
        commercial=False),
}


def licence_notice(entry: "object") -> str:
    """One line for the UI: the model's name, its licence and whether commercial use is allowed.

    `entry` is a `ZooEntry`; an entry without a `licence` says that its licence is unknown.
    """
    name = getattr(entry, "name", str(entry))
    key = getattr(entry, "licence", None)
    if key is None:
        return f"{name}: licence not stated in the model registry; check the source before reuse."
    licence = LICENCES[key]
    use = "commercial use allowed" if licence.commercial else "not for commercial use"
    return f"{name}: {licence.name} ({licence.url}), {use}."


def licence_markdown(entries: "list[object]") -> str:
    """A Markdown list of the given zoo entries' licences, for the page's "what this runs on" section."""
    return "\n".join(f"- {licence_notice(entry)}" for entry in entries)
