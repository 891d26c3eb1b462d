"""DragGAN studio: the Gradio app (layout and event wiring only; behaviour lives in `draggan/service/`).

Run locally:  python app.py [--share] [--host 0.0.0.0] [--port 7860]
On Hugging Face Spaces this file is the entry point (`app_file: app.py`).
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from draggan import settings
from draggan.engine import DragConfig, methods
from draggan.engine.config import SPACES
from draggan.export import animation_formats
from draggan.inversion import face_alignment_available
from draggan.service import examples, handlers
from draggan.app import served
from draggan.service.drawing import DISPLAY_MIN_SIZE, FIXED_TINT, FLEXIBLE_TINT
from draggan.app.events import Page
from draggan.app.events.api import ApiPanel
from draggan.app.events.drag import DragPanel
from draggan.app.events.export import ExportPanel
from draggan.app.events.model import ModelPanel
from draggan.app.events.photo import PhotoPanel
from draggan.inversion.presets import PRESETS
from draggan.server.sessions import SessionReaper
from draggan.service.state import DEFAULT_RENDER_EVERY
from draggan.service.studio import Studio
from draggan.server.tempdir import delete_cache_policy, use_for_gradio

TITLE = "DragGAN studio"
INTRO = """# DragGAN studio
Click the image for a **handle** (red), then its **target** (blue), and press **Start**. The **Mask** tab says
what may change; **Edit your own photo** starts from your picture."""
CSS = """
/* The whole image on the first screen: the status lines sit below it, and the image is held to the viewport's
   height below its own top (--canvas-top, kept by FIT_JS; 270 px, the desktop's, until that runs). */
#canvas img { cursor: crosshair; max-height: max(200px, calc(100svh - var(--canvas-top, 270px) - 8px)); }
#stats { min-height: 3.2em; }
#models-note, #models-note * { font-size: 0.85rem !important; opacity: 0.85; }
.compact-row button { min-width: 0 !important; }
.inv-status progress, .drag-progress progress { width: 100%; height: 0.9em; }
.inv-status, .drag-progress { font-size: 0.9rem; }
#toolbar { flex-wrap: nowrap !important; gap: 6px; }
#toolbar button { min-width: 0 !important; flex: 1 1 0 !important; padding-left: 4px !important;
                  padding-right: 4px !important; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#examples { flex-wrap: wrap; gap: 6px; align-items: center; }
#examples button { flex: 0 1 auto !important; min-width: 0 !important; }
#model-picker input { padding-right: 2.2em !important; text-overflow: ellipsis; }
#photo-view { padding-top: 1.6em; }
.toast-wrap { top: auto !important; bottom: 16px !important; }
@media (max-width: 820px) {
  #main-row { flex-direction: column !important; }
  #workspace { order: -1; }
  #main-row > div { min-width: 0 !important; width: 100% !important; }
  #toolbar button { font-size: 0.85rem !important; }
  #intro p { font-size: 0.9rem; }
  /* Gradio's zoom-to-fit keeps 30 px around the image: widened by that and square (at most the desktop's
     512 + 60 px), the mask editor shows the image as wide as the Points tab does. */
  #mask-editor { width: calc(100% + 60px) !important; max-width: 572px;
                 margin: 0 max(-30px, calc((100% - 572px) / 2)) !important;
                 height: auto !important; aspect-ratio: 1 / 1; }
}
"""
# Keeps --canvas-top, the image's distance from the top of the page, for the CSS that fits it to the first screen
# (what lies above it wraps differently at every width). Clicks still map to generator pixels (drawing.py).
FIT_JS = """() => {
  const fit = () => {
    const frame = document.querySelector('#canvas');
    const box = frame && frame.getBoundingClientRect();
    if (!box || box.height === 0) return;                       /* not shown yet, or another tab */
    document.documentElement.style.setProperty('--canvas-top', `${Math.round(box.top + window.scrollY)}px`);
  };
  new ResizeObserver(fit).observe(document.body);
  window.addEventListener('resize', fit);
  fit();
}"""
IMAGE_HEIGHT = 512
FLEX_HEX = "#{:02x}{:02x}{:02x}".format(*FLEXIBLE_TINT)
FIXED_HEX = "#{:02x}{:02x}{:02x}".format(*FIXED_TINT)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} hour(s)" if seconds >= 3600 else f"{max(1, round(seconds / 60))} minute(s)"


def about_text(studio: Studio) -> str:
    """The page's "what this runs on" note: the offered zoo models' licences and what happens to a photo."""
    from draggan.checkpoints.licences import licence_markdown
    from draggan.checkpoints.zoo import list_models

    offered = {c.source for c in studio.available}
    try:
        entries = [e for e in list_models() if e.key in offered]
    except (OSError, ValueError):
        entries = []
    licences = licence_markdown(entries) or "- (no zoo model is offered here)"
    config = settings.get()
    return (f"**Runs on** {studio.device.type.upper()}. Images are made by StyleGAN generators; most weights are "
            f"NVIDIA's and licensed for **non-commercial use only**:\n\n{licences}\n\n"
            "**Your photos**: an uploaded photo is used only in your browser session and never shown to other "
            "visitors. The upload and everything made from it (its latent, its tuned copy of the model, every "
            "image of it and of your edits the page showed, your exports) are deleted when the session ends: "
            f"{_duration(config.closed_session_ttl_s)} after you close the page, or after "
            f"{_duration(config.session_ttl_s)} without a request. Kept longer: only images shared with other "
            f"visitors (examples, seeds), which leave the server's cache {_duration(config.file_ttl_s)} after "
            "their last use. Exported PNGs say in their metadata that they are AI-generated or AI-edited.")


def build_demo(studio: Studio | None = None) -> gr.Blocks:
    """The whole app as one `gr.Blocks`; `studio` holds the shared context (a default one if None).
    The components are collected in `demo.page`, the panels' handlers in `demo.panels`."""
    studio = studio or Studio()
    light = dict(queue=True, concurrency_limit=None, api_visibility="private", show_progress="hidden")
    heavy = dict(concurrency_id="gpu", concurrency_limit=studio.concurrency)
    p = Page()
    photo_panel = PhotoPanel(studio, p)
    default = studio.default_model()
    bundled = studio.bundled_model()
    example_list = examples.offered(c.source for c in studio.available)

    config = settings.get()
    gradio_files = use_for_gradio()   # uploads and downloads in the app's temp folder, aged out
    with served.Blocks(title=TITLE, delete_cache=delete_cache_policy()) as demo:
        p.demo = demo
        p.state = gr.State(None, delete_callback=handlers.release, time_to_live=6 * 3600)  # backstop: the reaper expires idle sessions
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Row(equal_height=False, elem_id="main-row"):
            with gr.Column(scale=2, min_width=320, elem_id="controls"):
                with gr.Accordion("Model", open=True):
                    p.model = gr.Dropdown(studio.dropdown_choices(), value=default, label="Model",
                                          info="Downloads on first use; loaded models are shared by all users.",
                                          elem_id="model-picker")
                    p.use_bundled = gr.Button(f"Use {studio.label_of(bundled)} (no download)" if bundled else "",
                                              size="sm", visible=bool(bundled and bundled != default))
                    gr.Markdown(studio.models_note(), elem_id="models-note")
                    if studio.unavailable_details():
                        with gr.Accordion("Unavailable models", open=False):
                            gr.Markdown(studio.unavailable_details(), elem_id="models-note")
                    with gr.Accordion("Your own model", open=False):
                        p.upload = gr.File(label=f"Upload a network pickle or safetensors "
                                                 f"(≤ {studio.max_upload_mb:.0f} MB)",
                                           file_types=[".pkl", ".safetensors"], height=110)
                        p.hub_ref = gr.Textbox(label="…or a Hugging Face Hub file",
                                               placeholder="DragGan/DragGan-Models/stylegan2-ffhq-512x512.pkl")
                        p.load_own = gr.Button("Load this model")
                with gr.Accordion("Latent", open=True):
                    with gr.Row(equal_height=True):
                        p.seed = gr.Number(0, label="Seed", precision=0, minimum=0, scale=3)
                        p.dice = gr.Button("Random", scale=1, min_width=80)
                    p.psi = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Truncation ψ")
                    p.space = gr.Radio(list(SPACES), value=DragConfig.space, label="Latent space",
                                       info="w+ edits each layer's code (more precise); w keeps one shared code.")
                with gr.Accordion("Edit your own photo", open=False, elem_id="photo-panel"):
                    p.photo_file = gr.File(label="Upload a photo (PNG, JPEG, WebP)", file_types=["image"],
                                           height=110, elem_id="photo-upload")
                    p.face_align = gr.Checkbox(False, label="Align face (FFHQ-style crop, for face models)",
                                               visible=face_alignment_available())
                    p.photo_view = served.Image(label="Your photo · the model's reconstruction", type="numpy",
                                            interactive=False, elem_id="photo-view", buttons=[])
                    with gr.Accordion("Inversion steps", open=False):
                        preset = photo_panel.default_preset()
                        p.preset = gr.Radio(list(PRESETS), value=preset, label="Preset")
                        first = PRESETS[preset].steps
                        with gr.Row():
                            p.w_steps = gr.Number(first[0], label="W steps", precision=0, minimum=0)
                            p.wplus_steps = gr.Number(first[1], label="W+ steps", precision=0, minimum=0)
                            p.pti_steps = gr.Number(first[2], label="PTI steps", precision=0, minimum=0)
                    p.estimate = gr.Markdown(photo_panel.estimate_text(*first))
                    with gr.Row(elem_classes="compact-row"):
                        p.invert = gr.Button("Invert photo", variant="primary")
                        p.cancel = gr.Button("Cancel", variant="stop")
                    p.photo_status = gr.HTML(elem_id="photo-status")
                with gr.Accordion("Drag settings", open=False):
                    with gr.Row():
                        p.lr = gr.Number(studio.drag_lr(default), label="Step size (lr)",
                                         minimum=1e-5, maximum=1.0, step=0.0005)
                        p.mask_lambda = gr.Number(DragConfig.mask_lambda, label="Mask λ", minimum=0.0, step=1.0)
                    p.max_steps = gr.Slider(1, 1000, value=DragConfig.max_steps, step=1, label="Max steps per drag")
                    p.tracker = gr.Dropdown(methods.choices(), value=DragConfig.tracker, label="Drag method",
                                            info=" ".join(m.help for m in methods.METHODS.values()))
                    p.render_every = gr.Slider(0, 20, value=DEFAULT_RENDER_EVERY, step=1,
                                               label="Display interval: 0 = by time (a fresh view about every 2 s, "
                                                     "a cheap preview while dragging); k = every k steps")
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
            with gr.Column(scale=3, min_width=320, elem_id="workspace"):
                p.example_buttons = {}
                if example_list:
                    with gr.Row(elem_id="examples"):
                        gr.Markdown("**Try an example:**", container=False)
                        for example in example_list:
                            p.example_buttons[example] = gr.Button(example.label, size="sm")
                with gr.Row(elem_id="toolbar"):
                    p.start = gr.Button("▶ Start", variant="primary")
                    p.stop = gr.Button("■ Stop", variant="stop")
                    p.undo = gr.Button("↶ Undo")
                    p.redo = gr.Button("↷ Redo")
                    p.reset = gr.Button("⟲ Reset")
                with gr.Tabs():
                    with gr.Tab("Points"):
                        p.image = served.Image(label="Click: handle, then target", type="pil", interactive=False,
                                           elem_id="canvas", buttons=["fullscreen"], show_label=False)
                        with gr.Row(elem_classes="compact-row"):
                            p.remove_last = gr.Button("Remove last point", size="sm")
                            p.clear = gr.Button("Clear points", size="sm")
                            p.show_mask = gr.Checkbox(True, label="Show mask", min_width=80)
                    with gr.Tab("Mask"):
                        p.editor = served.ImageEditor(
                            type="numpy", image_mode="RGBA", sources=[], transforms=[], layers=False,
                            brush=gr.Brush(colors=[FLEX_HEX, FIXED_HEX], default_color=FLEX_HEX,
                                           color_mode="fixed", default_size=24),
                            eraser=gr.Eraser(default_size=24), show_label=False, elem_id="mask-editor",
                            height=IMAGE_HEIGHT + 60, canvas_size=(DISPLAY_MIN_SIZE, DISPLAY_MIN_SIZE))
                        with gr.Row():
                            gr.Markdown(f"<span style='color:{FLEX_HEX}'>■</span> flexible area (may change; "
                                        f"everything else stays) &nbsp; <span style='color:{FIXED_HEX}'>■</span> "
                                        "fixed area (must not change)")
                            p.reset_mask = gr.Button("Reset mask", size="sm", scale=0)
                    with gr.Tab("Before / after"):
                        p.compare = served.ImageSlider(label="Start image · result", type="numpy", interactive=False,
                                                   elem_id="compare", max_height=IMAGE_HEIGHT, buttons=[])
                # Below the image: the status lines grow during a drag and must not push it off the first screen.
                p.stats = gr.Markdown(elem_id="stats")
                p.progress = gr.HTML(elem_id="drag-progress")

        with gr.Accordion("About this demo: models, licences, your photos", open=False, elem_id="about"):
            gr.Markdown(about_text(studio))

        # Headless API: `gradio_client` calls /drag with these hidden inputs.
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

        model_panel = ModelPanel(studio, p)
        demo.panels = Page(model=model_panel, drag=DragPanel(studio, p, model_panel.apply_latent), photo=photo_panel,
                           export=ExportPanel(studio, p), api=ApiPanel(studio, p))
        for panel in vars(demo.panels).values():
            panel.wire(heavy, light)
    demo.page = p
    demo.queue(default_concurrency_limit=studio.concurrency, max_size=config.queue_max)
    demo.reaper = SessionReaper(demo, config.session_ttl_s, config.closed_session_ttl_s, files=gradio_files,
                                file_ttl_s=config.file_ttl_s).start()
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """`demo.launch` with the app's theme, CSS and script (Gradio 6 takes them at launch time)."""
    return demo.launch(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, js=FIT_JS, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--device", default=None, help="torch device (default: CUDA, then MPS, then CPU)")
    args = parser.parse_args()
    studio = Studio(device=args.device)
    studio.apply_thread_policy()
    studio.preload()
    demo = build_demo(studio)
    # quiet: Gradio's own banner tells people to "set share=True in launch()"; this app's switch is --share.
    launch(demo, share=args.share, server_name=args.host, server_port=args.port,
           max_file_size=f"{studio.max_upload_mb:.0f}mb", quiet=True, prevent_thread_lock=True)
    print(f"{TITLE} running on {demo.local_url}")
    if demo.share_url:
        print(f"Public link (temporary): {demo.share_url}")
    elif not os.environ.get("SPACE_ID"):
        print("For a public gradio.live link, start it with: python app.py --share")
    demo.block_thread()


if __name__ == "__main__":
    main()
