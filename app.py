"""DragGAN studio: the Gradio app, a short list of panels (each lays out and wires its part of the page in
`draggan/app/events/`; behaviour lives in `draggan/service/`).

Run locally:  python app.py [--share] [--host 0.0.0.0] [--port 7860]
On Hugging Face Spaces this file is the entry point (`app_file: app.py`).
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from draggan import settings
from draggan.service import handlers
from draggan.app import served
from draggan.app.events import Page
from draggan.app.events.api import ApiPanel
from draggan.app.events.drag import DragPanel
from draggan.app.events.export import ExportPanel
from draggan.app.events.model import ModelPanel
from draggan.app.events.photo import PhotoPanel
from draggan.server.sessions import SessionReaper
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


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} hour(s)" if seconds >= 3600 else f"{max(1, round(seconds / 60))} minute(s)"


def about_text(studio: Studio) -> str:
    """The page's "what this runs on" note: the offered zoo models' licences and what happens to a photo."""
    from draggan.checkpoints.licences import licence_markdown
    from draggan.checkpoints.zoo import list_models

    offered = {c.source for c in studio.available}
    entries = [e for e in list_models() if e.key in offered]
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
    """The whole app as one `gr.Blocks`: the panels, each laying out its own part of the page and wiring its
    events; `studio` holds the shared context (a default one if None). The components are collected in
    `demo.page`, the panels in `demo.panels`."""
    studio = studio or Studio()
    light = dict(queue=True, concurrency_limit=None, api_visibility="private", show_progress="hidden")
    heavy = dict(concurrency_id="gpu", concurrency_limit=studio.concurrency)
    p = Page()
    photo = PhotoPanel(studio, p)
    model = ModelPanel(studio, p, photo.preset_for)
    panels = Page(model=model, photo=photo, drag=DragPanel(studio, p, model.apply_latent),
                  export=ExportPanel(studio, p), api=ApiPanel(studio, p))
    config = settings.get()
    gradio_files = use_for_gradio()   # uploads and downloads in the app's temp folder, aged out
    with served.Blocks(title=TITLE, delete_cache=delete_cache_policy()) as demo:
        p.demo = demo
        p.state = gr.State(None, delete_callback=handlers.release, time_to_live=6 * 3600)  # backstop: the reaper expires idle sessions
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Row(equal_height=False, elem_id="main-row"):
            with gr.Column(scale=2, min_width=320, elem_id="controls"):
                for panel in (panels.model, panels.photo, panels.drag, panels.export):
                    panel.controls()
            with gr.Column(scale=3, min_width=320, elem_id="workspace"):
                panels.model.examples()
                panels.drag.workspace()
        with gr.Accordion("About this demo: models, licences, your photos", open=False, elem_id="about"):
            gr.Markdown(about_text(studio))
        panels.api.controls()
        for panel in vars(panels).values():
            panel.wire(heavy, light)
    demo.page, demo.panels = p, panels
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
