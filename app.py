"""DragGAN studio: the Gradio app (layout and event wiring only; behaviour lives in `draggan/ui/`).

Run locally:  python app.py [--share] [--host 0.0.0.0] [--port 7860]
On Hugging Face Spaces this file is the entry point (`app_file: app.py`).
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from draggan.export import animation_formats
from draggan.inversion import face_alignment_available
from draggan.ui.callbacks import StudioApp
from draggan.ui.drawing import FIXED_TINT, FLEXIBLE_TINT
from draggan.ui.photo import PRESETS

TITLE = "DragGAN studio"
INTRO = """# DragGAN studio
Click the image to place a **handle** (red), then its **target** (blue); add as many pairs as you like and
press **Start**. Paint a *flexible area* (green) in the **Mask** tab to say what may change, or a *fixed area*
(red) for what must not. To edit your own picture, open **Edit your own photo**."""
CSS = """
#canvas img { cursor: crosshair; }
#stats { min-height: 3.2em; }
#models-note, #models-note * { font-size: 0.85rem !important; opacity: 0.85; }
.compact-row button { min-width: 0 !important; }
.inv-status progress { width: 100%; height: 0.9em; }
.inv-status { font-size: 0.9rem; }
"""
FLEX_HEX = "#{:02x}{:02x}{:02x}".format(*FLEXIBLE_TINT)
FIXED_HEX = "#{:02x}{:02x}{:02x}".format(*FIXED_TINT)


def build_demo(studio: StudioApp | None = None) -> gr.Blocks:
    """The whole app as one `gr.Blocks`; `studio` holds the shared context (a default one if None)."""
    studio = studio or StudioApp()
    light = dict(queue=True, concurrency_limit=None, api_visibility="private", show_progress="hidden")
    heavy = dict(concurrency_id="gpu", concurrency_limit=studio.concurrency)

    with gr.Blocks(title=TITLE) as demo:
        state = gr.State(None, delete_callback=studio.release_state, time_to_live=6 * 3600)
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                with gr.Accordion("Model", open=True):
                    model = gr.Dropdown(studio.dropdown_choices(), value=studio.default_model(), label="Model",
                                        info="Downloads on first use; loaded models are shared by all users.")
                    gr.Markdown(studio.models_note(), elem_id="models-note")
                    if studio.unavailable_details():
                        with gr.Accordion("Unavailable models", open=False):
                            gr.Markdown(studio.unavailable_details(), elem_id="models-note")
                    with gr.Accordion("Your own model", open=False):
                        upload = gr.File(label=f"Upload a network pickle or safetensors "
                                               f"(≤ {studio.max_upload_mb:.0f} MB)",
                                         file_types=[".pkl", ".safetensors"], height=110)
                        hub_ref = gr.Textbox(label="…or a Hugging Face Hub file",
                                             placeholder="DragGan/DragGan-Models/stylegan2-ffhq-512x512.pkl")
                        load_own = gr.Button("Load this model")
                with gr.Accordion("Latent", open=True):
                    with gr.Row(equal_height=True):
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0, scale=3)
                        dice = gr.Button("Random", scale=1, min_width=80)
                    psi = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Truncation ψ")
                    space = gr.Radio(["w", "w+"], value="w+", label="Latent space",
                                     info="w+ edits each layer's code (more precise); w keeps one shared code.")
                with gr.Accordion("Edit your own photo", open=False, elem_id="photo-panel"):
                    photo_file = gr.File(label="Upload a photo (PNG, JPEG, WebP)", file_types=["image"], height=110,
                                         elem_id="photo-upload")
                    face_align = gr.Checkbox(False, label="Align face (FFHQ-style crop, for face models)",
                                             visible=face_alignment_available())
                    photo_view = gr.Image(label="Your photo · the model's reconstruction", type="numpy",
                                          interactive=False, elem_id="photo-view", buttons=[])
                    with gr.Accordion("Inversion steps", open=False):
                        preset = gr.Radio(list(PRESETS), value=studio.default_preset(), label="Preset")
                        first = PRESETS[studio.default_preset()]
                        with gr.Row():
                            w_steps = gr.Number(first[0], label="W steps", precision=0, minimum=0)
                            wplus_steps = gr.Number(first[1], label="W+ steps", precision=0, minimum=0)
                            pti_steps = gr.Number(first[2], label="PTI steps", precision=0, minimum=0)
                    estimate = gr.Markdown(studio.estimate(*first))
                    with gr.Row(elem_classes="compact-row"):
                        invert = gr.Button("Invert photo", variant="primary")
                        cancel = gr.Button("Cancel", variant="stop")
                    photo_status = gr.HTML(elem_id="photo-status")
                with gr.Accordion("Drag settings", open=False):
                    with gr.Row():
                        lr = gr.Number(studio.drag_lr(studio.default_model()), label="Step size (lr)",
                                       minimum=1e-5, maximum=1.0, step=0.0005)
                        mask_lambda = gr.Number(20.0, label="Mask λ", minimum=0.0, step=1.0)
                    max_steps = gr.Slider(1, 1000, value=200, step=1, label="Max steps per drag")
                    render_every = gr.Slider(1, 20, value=2, step=1, label="Display interval (render every k steps)")
                with gr.Accordion("Export", open=False):
                    with gr.Row(elem_classes="compact-row"):
                        png_btn = gr.Button("PNG", size="sm")
                        latent_btn = gr.Button("Latent", size="sm")
                        anim_btns = {fmt: gr.Button(fmt.upper(), size="sm") for fmt in animation_formats()}
                        recipe_btn = gr.Button("Recipe", size="sm")
                        tuned_btn = gr.Button("Tuned generator", size="sm")
                    if "mp4" not in animation_formats():
                        gr.Markdown("MP4 needs `pip install imageio-ffmpeg`; GIF works as is.")
                    exported = gr.File(label="Download", interactive=False, visible=False)
                    recipe_in = gr.File(label="Replay an edit recipe (.json)", file_types=[".json"])
            with gr.Column(scale=3, min_width=420):
                with gr.Row(elem_classes="compact-row"):
                    start = gr.Button("▶ Start", variant="primary")
                    stop = gr.Button("■ Stop", variant="stop")
                    undo = gr.Button("↶ Undo")
                    redo = gr.Button("↷ Redo")
                    reset = gr.Button("⟲ Reset image")
                stats = gr.Markdown(elem_id="stats")
                with gr.Tabs():
                    with gr.Tab("Points"):
                        image = gr.Image(label="Click: handle, then target", type="pil", interactive=False,
                                         elem_id="canvas", buttons=["fullscreen"], show_label=False)
                        with gr.Row(elem_classes="compact-row"):
                            remove_last = gr.Button("Remove last point", size="sm")
                            clear = gr.Button("Clear points", size="sm")
                            show_mask = gr.Checkbox(True, label="Show mask", min_width=80)
                    with gr.Tab("Mask"):
                        editor = gr.ImageEditor(
                            type="numpy", image_mode="RGBA", sources=[], transforms=[], layers=False,
                            brush=gr.Brush(colors=[FLEX_HEX, FIXED_HEX], default_color=FLEX_HEX,
                                           color_mode="fixed", default_size=24),
                            eraser=gr.Eraser(default_size=24), show_label=False, elem_id="mask-editor")
                        with gr.Row():
                            gr.Markdown(f"<span style='color:{FLEX_HEX}'>■</span> flexible area (may change; "
                                        f"everything else stays) &nbsp; <span style='color:{FIXED_HEX}'>■</span> "
                                        "fixed area (must not change)")
                            reset_mask = gr.Button("Reset mask", size="sm", scale=0)

        # Headless API: `gradio_client` calls /drag with these hidden inputs.
        with gr.Row(visible=False):
            api_model = gr.Textbox(label="model")
            api_seed = gr.Number(0, label="seed", precision=0)
            api_points = gr.Textbox(label="points", value="[[20, 20, 30, 30]]")
            api_steps = gr.Number(50, label="steps", precision=0)
            api_psi = gr.Number(0.7, label="psi")
            api_space = gr.Textbox("w+", label="space")
            api_lr = gr.Number(0.001, label="lr")
            api_image = gr.Image(type="numpy", format="png", label="image")
            api_info = gr.JSON(label="info")
            api_button = gr.Button("drag")

        full = [state, image, editor, stats]
        settings = [lr, max_steps, render_every, mask_lambda]
        demo.load(studio.init_session, [model, seed, psi, space, *settings], full, **heavy,
                  api_visibility="private")
        model.change(studio.change_model, [state, model, seed, psi, space], [*full, lr], **heavy,
                     api_visibility="private")
        load_own.click(studio.load_own_model, [state, upload, hub_ref, seed, psi, space], full, **heavy,
                       api_visibility="private")
        gr.on([seed.submit, seed.blur, psi.release, space.change], studio.change_latent, [state, seed, psi, space],
              [*full, space], **light)
        dice.click(studio.random_seed, None, seed, **light).then(studio.change_latent, [state, seed, psi, space],
                                                                   [*full, space], **light)
        gr.on([c.change for c in settings], studio.update_params, [state, *settings], None, **light)

        image.select(studio.click, state, [image, stats], **light)
        remove_last.click(studio.remove_last, state, [image, stats], **light)
        clear.click(studio.clear_points, state, [image, stats], **light)
        show_mask.change(studio.toggle_mask, [state, show_mask], image, **light)
        editor.change(studio.paint_mask, [state, editor], [image, stats], trigger_mode="always_last", **light)
        reset_mask.click(studio.reset_mask, state, [image, editor, stats], **light)

        run = start.click(studio.start, state, [image, stats, editor], show_progress="hidden", **heavy,
                          api_visibility="private")
        stop.click(studio.stop, state, [image, stats, editor], cancels=[run], **light)
        undo.click(studio.undo, state, [image, editor, stats], **light)
        redo.click(studio.redo, state, [image, editor, stats], **light)
        reset.click(studio.reset_image, state, [image, editor, stats], **light)

        steps = [w_steps, wplus_steps, pti_steps]
        photo_file.upload(studio.prepare_photo, [state, photo_file, face_align], [photo_view, photo_status], **light)
        face_align.input(studio.prepare_photo, [state, photo_file, face_align], [photo_view, photo_status], **light)
        preset.input(studio.preset, preset, steps, **light)
        gr.on([c.change for c in steps], studio.estimate, [*steps, state], estimate, **light)
        invert.click(studio.invert_photo, [state, photo_file, face_align, *steps],
                     [*full, photo_view, photo_status, space], show_progress="hidden", **heavy,
                     api_visibility="private").then(studio.estimate, [*steps, state], estimate, **light)
        cancel.click(studio.cancel_photo, state, [stats, photo_status], **light)

        png_btn.click(lambda ui: studio.export(ui, "png"), state, exported, **light)
        latent_btn.click(lambda ui: studio.export(ui, "latent"), state, exported, **light)
        for fmt, button in anim_btns.items():
            button.click(lambda ui, fmt=fmt: studio.export(ui, fmt), state, exported, **light)
        recipe_btn.click(lambda ui: studio.export(ui, "recipe"), state, exported, **light)
        tuned_btn.click(lambda ui: studio.export(ui, "tuned"), state, exported, **light)
        recipe_in.upload(studio.load_recipe, [state, recipe_in], full, **heavy, api_visibility="private")

        api_button.click(studio.api_drag, [api_model, api_seed, api_points, api_steps, api_psi, api_space, api_lr],
                         [api_image, api_info], api_name="drag", **heavy)
        gr.api(studio.api_models, api_name="models")
    demo.queue(default_concurrency_limit=studio.concurrency)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """`demo.launch` with the app's theme and CSS (Gradio 6 takes them at launch time)."""
    return demo.launch(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--device", default=None, help="torch device (default: CUDA, then MPS, then CPU)")
    args = parser.parse_args()
    studio = StudioApp(device=args.device)
    demo = build_demo(studio)
    launch(demo, share=args.share, server_name=args.host, server_port=args.port,
           max_file_size=f"{studio.max_upload_mb:.0f}mb")


if __name__ == "__main__":
    main()
