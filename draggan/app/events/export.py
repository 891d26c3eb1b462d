"""Export panel: PNG, latent, GIF/MP4, recipe, tuned generator; replaying a recipe."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ... import recipes
from ...export import animation_formats
from ...service import handlers, photo
from ...service.handlers import UserError
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, answer, need, unchanged, whole, whole_outputs


class ExportPanel:
    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio = studio
        self.page = page

    def controls(self) -> None:
        """The Export section: a button per format, the visible AI mark, the download, the recipe upload."""
        p = self.page
        with gr.Accordion("Export", open=False):
            with gr.Row(elem_classes="compact-row"):
                p.export_buttons = {"png": gr.Button("PNG", size="sm"),
                                    "png-shown": gr.Button("PNG as shown", size="sm"),
                                    "latent": gr.Button("Latent", size="sm")}
                p.export_buttons.update({fmt: gr.Button(fmt.upper(), size="sm")
                                         for fmt in animation_formats()})
                p.export_buttons["recipe"] = gr.Button("Recipe", size="sm")
                p.export_buttons["tuned"] = gr.Button("Tuned generator", size="sm")
            p.ai_mark = gr.Checkbox(False, label='Stamp a visible "AI Generated" mark on the PNG',
                                    info="On by default for an edited photo; the PNG always says in its "
                                         "metadata that it is AI-generated or AI-edited.")
            p.exported = gr.File(label="Download", interactive=False, visible=False)
            p.recipe_in = gr.File(label="Replay an edit recipe (.json)", file_types=[".json"])

    @answer()
    def export(self, ui: UIState | None, what: str, mark: bool | None = None) -> dict:
        """Write one export of the session; `mark` stamps the visible "AI Generated" label on a PNG."""
        mark = None if mark is None else bool(mark)
        writers = {"png": lambda u: handlers.export_png(u, mark=mark),
                   "png-shown": lambda u: handlers.export_png(u, mark=mark, displayed=True),
                   "latent": handlers.export_latent, "recipe": handlers.export_recipe,
                   "gif": lambda u: handlers.export_animation(u, "gif"),
                   "mp4": lambda u: handlers.export_animation(u, "mp4"), "tuned": photo.export_tuned_generator}
        ui = need(ui)
        handlers.ensure_idle(ui, "export")
        if what not in writers:
            raise UserError(f"unknown export {what!r}")
        path = writers[what](ui)
        return {self.page.exported: gr.update(value=str(path), visible=True)}

    def _recipe_model(self, ui: UIState | None, model: str):
        """(the model to replay a recipe on, a note or ""): the zoo model it names, or for "the current model"
        this session's model (its content key is checked on replay). A recipe names no paths."""
        if model == recipes.CURRENT_MODEL and ui is not None:
            return ui.model, ""
        choice = self.studio.offered(model)
        if choice is not None and choice.available:
            return self.studio.resolve(choice.source), ""
        if ui is None:
            raise UserError(f"The recipe's model {Path(model).name!r} is not available here: load it under "
                            f"'Your own model', then load the recipe again.")
        return ui.model, f"The recipe's model {Path(model).name!r} is not available here; replayed on {ui.model.label}."

    @answer("a recipe replay")
    def load_recipe(self, ui: UIState | None, file: str | None, progress: gr.Progress = gr.Progress(),
                    request: gr.Request = None) -> dict:
        """Replay an uploaded recipe into a new session state (one running job per visitor)."""
        if not file:
            return unchanged()
        if ui is not None:
            handlers.ensure_idle(ui, "load a recipe")
        recipe = recipes.load_recipe(file)
        ref, model_note = self._recipe_model(ui, recipe.model)
        G = self.studio.load(ref)
        if (G.img_height, G.img_width) != tuple(recipe.image_size):
            raise UserError(f"The recipe was made on a {recipe.image_size[0]}×{recipe.image_size[1]} model; "
                            f"this one makes {G.img_height}×{G.img_width} images.")
        new = handlers.state_from_recipe(recipe, ref, str(self.studio.device),
                                         ui.render_every if ui is not None else 0)
        handlers.replace(ui, new)
        notes = [note[:1].upper() + note[1:] + "." for note in recipe.notes]   # said in the status line
        new.notice = " ".join([f"Replayed {len(recipe.drags)} drag(s) from the recipe.", model_note, *notes]).strip()
        return whole(self.page, new)

    def wire(self, heavy: dict, light: dict) -> None:
        p = self.page
        for what, button in p.export_buttons.items():
            button.click(lambda ui, mark, what=what: self.export(ui, what, mark), [p.state, p.ai_mark], p.exported,
                         **light)
        p.recipe_in.upload(self.load_recipe, [p.state, p.recipe_in], whole_outputs(p), **heavy,
                           api_visibility="private")
