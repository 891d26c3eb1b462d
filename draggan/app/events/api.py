"""The headless API: `/models` lists what this server can use, `/drag` runs one drag and returns the image."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from ...engine import DragConfig
from ...service import handlers
from .. import served
from ...service.studio import Studio
from . import Page, answer


class ApiPanel:
    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio = studio
        self.page = page

    def controls(self) -> None:
        """The hidden inputs and outputs `gradio_client` calls /drag with."""
        p = self.page
        with gr.Row(visible=False):
            p.api_model = gr.Textbox(label="model")
            p.api_seed = gr.Number(0, label="seed", precision=0)
            p.api_points = gr.Textbox(label="points", value="[[20, 20, 30, 30]]")
            p.api_steps = gr.Number(50, label="steps", precision=0)
            p.api_psi = gr.Number(0.7, label="psi")
            p.api_space = gr.Textbox(DragConfig.space, label="space")
            p.api_lr = gr.Number(DragConfig.lr, label="lr")
            p.api_image = served.Image(type="numpy", format="png", label="image")
            p.api_info = gr.JSON(label="info")
            p.api_button = gr.Button("drag")

    def models(self) -> list[dict[str, Any]]:
        """Models this server can use: source (pass it to /drag), label, and availability."""
        return [{"source": c.source, "label": c.label, "available": c.available, "reason": c.reason}
                for c in self.studio.choices]

    @answer("a drag", api=True)
    def drag(self, model: str, seed: float, points: str, steps: float, psi: float, space: str, lr: float,
             request: gr.Request = None):
        """Run one drag headlessly: returns the result image and a JSON summary (one running job per
        visitor; the model named by its label, never a server path). A refusal is raised as `gr.Error`."""
        ref = self.studio.resolve(model or (self.studio.default_model() or ""))
        self.studio.load(ref)
        ui, job = handlers.headless_drag(ref, str(self.studio.device), seed, psi, space or "w+", points, steps, lr)
        info = {"model": ref.label, "steps": ui.snap.drags()[-1].steps if ui.snap.drags() else 0,
                "handles": [list(p) for p in ui.handles], "targets": [list(p) for p in ui.targets],
                "distances": [float(np.hypot(tx - x, ty - y)) for (x, y), (tx, ty) in zip(ui.handles, ui.targets)],
                "start_image_changed": bool((ui.image != ui.start_image).any())}
        image = ui.image
        handlers.release(ui)
        return image, info

    def wire(self, heavy: dict, light: dict) -> None:
        p = self.page
        p.api_button.click(self.drag, [p.api_model, p.api_seed, p.api_points, p.api_steps, p.api_psi, p.api_space,
                                       p.api_lr], [p.api_image, p.api_info], api_name="drag", **heavy)
        gr.api(self.models, api_name="models")
