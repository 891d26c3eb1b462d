"""Command line: `python -m draggan <command>`.

Commands: `generate` (one image from a seed), `models` (the zoo with what is usable offline), `invert`
(a photo into a model) and `replay` (an edit recipe). Each command is a `_cmd_*` function registered in
`build_parser`, so later features add a subparser and a function.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

from .checkpoints import cache, hub, load_generator
from .checkpoints.zoo import list_models
from . import settings
from .errors import CommandError, DragGANError
from .images import to_uint8
from .networks.stylegan2 import NOISE_MODES

EXIT_USAGE = 2
EXIT_FAILED = 1


def _label(G: torch.nn.Module, class_idx: int | None, device: torch.device) -> torch.Tensor:
    """One-hot class label for conditional models; an empty [1, 0] label otherwise."""
    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim == 0:
        if class_idx is not None:
            print(f"warning: this model is unconditional; ignoring --class-idx {class_idx}", file=sys.stderr)
        return c
    if class_idx is None or not 0 <= class_idx < G.c_dim:
        raise CommandError(f"this model is conditional on {G.c_dim} classes: pass --class-idx between 0 and "
                           f"{G.c_dim - 1}")
    c[0, class_idx] = 1
    return c


def _cmd_generate(args: argparse.Namespace) -> int:
    G = load_generator(args.model, device=args.device)
    device = next(G.parameters()).device
    ws = G.latent_from_seed(args.seed, args.psi, c=_label(G, args.class_idx, device))
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode=args.noise_mode)
    from PIL import Image
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img, keep_grey=True)).save(out)
    print(f"wrote {out} ({G.img_width}x{G.img_height}, seed {args.seed}, psi {args.psi})")
    return 0


def _status(entry, hub_online) -> str:
    if entry.is_local:
        path = entry.local_path
        return ("local, converted" if cache.has_converted(path) else "local") if path.exists() else "missing"
    state = hub.availability(entry, hub_online)
    if state != "cached":
        return state
    cached = hub.cached_hub_file(hub.entry_ref(entry))
    return "cached, converted" if cached is not None and cache.has_converted(cached) else "cached"


def _cmd_models(args: argparse.Namespace) -> int:
    entries = list_models()
    probe = functools.lru_cache(maxsize=1)(hub.hub_reachable)
    rows = [(e.key, f"{e.height}x{e.width}", f"~{e.approx_size_mb:.0f} MB" if e.approx_size_mb else "?",
             _status(e, probe), e.name) for e in entries]
    header = ("key", "HxW", "size", "status", "name")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    print(f"\nHub cache: {hub.hub_cache_dir()}   converted cache: {cache.converted_cache_dir()}   "
          f"offline mode: {'on' if hub.is_offline() else 'off'}")
    return 0


def _cmd_invert(args: argparse.Namespace) -> int:
    from .export import save_latent
    from .inversion import FaceAlignmentUnavailable, InversionProgress, invert
    from .inversion.export import save_tuned_generator
    from .inversion.presets import PRESETS, default_preset
    from .inversion.projection import projection_dtype

    if (args.steps is not None and args.steps < 0) or (args.pti_steps is not None and args.pti_steps < 0):
        raise CommandError("--steps and --pti-steps must be >= 0")
    G = load_generator(args.model, device=args.device)
    device = next(G.parameters()).device
    name = args.preset or default_preset(device.type, max(G.img_height, G.img_width))
    steps = {}
    if args.steps is not None:
        steps.update(w_steps=round(args.steps * 2 / 3), wplus_steps=args.steps - round(args.steps * 2 / 3))
    if args.pti_steps is not None:
        steps.update(pti_steps=args.pti_steps)
    config = PRESETS[name].config(loss=args.loss, seed=args.seed, face_align=args.face_align, **steps)
    print(f"preset {name}{' (the default here)' if args.preset is None else ''}: {config.w_steps} W + "
          f"{config.wplus_steps} W+ projection steps"
          f"{f' at {config.project_size} px' if 0 < config.project_size < max(G.img_height, G.img_width) else ''}"
          f"{' in bfloat16' if projection_dtype(G, config, device) == torch.bfloat16 else ''}"
          f", {config.pti_steps} tuning steps", file=sys.stderr)
    every = max(1, config.total_steps // 20)

    def progress(event: InversionProgress) -> None:
        if event.step % every == 0 or event.step == event.total_steps:
            print(f"  step {event.step}/{event.total_steps} ({event.stage}): loss {event.loss:.4f}", file=sys.stderr)

    try:
        result = invert(G, args.photo, config, progress=progress)
    except (ValueError, FaceAlignmentUnavailable) as e:
        raise CommandError(str(e)) from e
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_latent(result.w, out)
    print(f"wrote {out} (W+ latent {tuple(result.w.shape)}); PSNR {result.psnr:.2f} dB"
          + (f", LPIPS {result.lpips:.4f}" if result.lpips is not None else "")
          + f", loss {result.loss_name}, {result.seconds:.1f} s")
    if result.loss_note:
        print(f"note: {result.loss_note}", file=sys.stderr)
    if args.save_image:
        from PIL import Image
        Image.fromarray(result.image).save(args.save_image)
        print(f"wrote {args.save_image} (reconstruction)")
    if args.save_generator:
        weights = save_tuned_generator(result.G_tuned, args.save_generator, note=dict(base_model=str(args.model)))
        print(f"wrote {weights} (tuned generator; load it with --model {weights})")
    elif config.pti_steps > 0:
        print("note: the latent reproduces the photo only with the tuned generator; pass --save-generator to keep it",
              file=sys.stderr)
    return 0


def _add_invert_parser(commands: argparse._SubParsersAction) -> None:
    from .inversion.presets import FAST_FROM_PX, PRESETS

    inv = commands.add_parser("invert", help="invert a photo into a model (projection + pivotal tuning)",
                              description="Fit a W+ latent to a photo (centre-cropped and resized to the model), "
                                          "then fine-tune a copy of the generator around it (PTI).")
    inv.add_argument("photo", help="image file (PNG, JPEG, WebP, ...)")
    inv.add_argument("--model", required=True, metavar="SOURCE", help="model source, as for `generate`")
    inv.add_argument("--out", required=True, help="output latent file (.npy, [1, num_ws, w_dim] float32)")
    inv.add_argument("--preset", choices=list(PRESETS), default=None,
                     help="the page's inversion presets, by name (default: Best on a GPU; on a CPU Fast for "
                          f"models of {FAST_FROM_PX} px and up, Quick below)")
    inv.add_argument("--steps", type=int, default=None,
                     help="projection steps instead of the preset's: 2/3 in W, then 1/3 in W+")
    inv.add_argument("--pti-steps", type=int, default=None,
                     help="pivotal-tuning steps instead of the preset's; 0 disables tuning")
    inv.add_argument("--loss", choices=("auto", "lpips", "pixel"), default="auto",
                     help="auto: LPIPS-VGG16 if its weights can be had, else pixel + multi-scale (default auto)")
    inv.add_argument("--seed", type=int, default=0, help="random seed of the optimisation (default 0)")
    inv.add_argument("--face-align", action="store_true",
                     help="crop the face FFHQ-style first (face models; needs dlib and the align.dat landmark model)")
    inv.add_argument("--save-generator", default=None, metavar="PATH",
                     help="write the tuned generator: a .safetensors file (config.json beside it) or a folder")
    inv.add_argument("--save-image", default=None, metavar="PNG", help="write the reconstruction")
    inv.add_argument("--device", default=None, help="torch device (default: cuda, then mps, then cpu)")
    inv.set_defaults(func=_cmd_invert)


def _cmd_replay(args: argparse.Namespace) -> int:
    import threading

    from . import recipes
    from .export import save_animation, save_png

    if args.render_every < 1:
        raise CommandError("--render-every must be >= 1")
    recipe = recipes.load_recipe(args.recipe)
    if args.model is None and recipe.model == recipes.CURRENT_MODEL:
        raise CommandError("this recipe was made on a model of its own, not a zoo model: pass --model SOURCE "
                           "with that model")
    source = args.model if args.model is not None else recipe.model
    key = recipes.model_key(source)
    recipes.check_model_key(recipe, key)
    for note in recipe.notes:
        print(f"note: {note}", file=sys.stderr)
    G = load_generator(source, device=args.device)
    total = sum(d.steps for d in recipe.drags)
    every = max(1, -(-total // 10))    # about ten progress lines
    done = 0

    def progress(p: recipes.ReplayProgress) -> None:
        nonlocal done
        done += 1
        if done % every == 0:
            print(f"  drag {p.drag}/{p.drags}, step {p.step}/{p.steps}", file=sys.stderr)

    stop = threading.Event()
    try:
        result = recipes.replay(recipe, G, current_model_key=key, on_step=progress, stop_event=stop,
                                render_every=args.render_every if args.gif else 0)
    except KeyboardInterrupt:
        raise CommandError("interrupted; nothing written") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(result.session.render(), out)
    print(f"wrote {out} ({len(result.drags)} drag(s), {sum(d.record.steps for d in result.drags)} steps)")
    if args.gif:
        frames = [result.start_image] + [f for d in result.drags for f in d.frames]
        gif = save_animation(frames, args.gif, fps=args.fps)
        print(f"wrote {gif} ({len(frames)} frames)")
    return 0


def _add_replay_parser(commands: argparse._SubParsersAction) -> None:
    rep = commands.add_parser("replay", help="replay an edit recipe (.json) and write the result",
                              description="Re-run every drag of an edit recipe from its seed and write the image. "
                                          "A recipe names a zoo model, or a model of its own that --model must give "
                                          "(it is checked by its content hash).")
    rep.add_argument("recipe", help="edit recipe file (.json) exported by the app")
    rep.add_argument("--out", required=True, help="output image file (.png)")
    rep.add_argument("--gif", default=None, metavar="GIF", help="also write the drags as an animated GIF (or .mp4)")
    rep.add_argument("--model", default=None, metavar="SOURCE",
                     help="model source, as for `generate` (default: the recipe's zoo model)")
    rep.add_argument("--render-every", type=int, default=5, help="animation frame every N steps (default 5)")
    rep.add_argument("--fps", type=float, default=12.0, help="animation frames per second (default 12)")
    rep.add_argument("--device", default=None, help="torch device (default: cuda, then mps, then cpu)")
    rep.set_defaults(func=_cmd_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m draggan", description="DragGAN studio command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="generate one image from a seed",
                              description="Generate one image: z = RandomState(seed).randn(1, z_dim).")
    gen.add_argument("--model", required=True, metavar="SOURCE",
                     help="zoo key (see `models`), .pkl path, converted cache folder, or Hub file "
                          "owner/repo/file.pkl (also hf://...)")
    gen.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    gen.add_argument("--psi", type=float, default=0.7, help="truncation psi (default 0.7)")
    gen.add_argument("--class-idx", type=int, default=None, help="class index, required by conditional models")
    gen.add_argument("--noise-mode", choices=NOISE_MODES, default="const", help="noise mode (default const)")
    gen.add_argument("--device", default=None, help="torch device (default: cuda, then mps, then cpu)")
    gen.add_argument("--out", required=True, help="output image file (.png)")
    gen.set_defaults(func=_cmd_generate)

    models = commands.add_parser("models", help="list the model zoo and what is available offline")
    models.set_defaults(func=_cmd_models)
    _add_invert_parser(commands)
    _add_replay_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings.reload()  # read the environment once per command; a bad DRAGGAN_* variable stops here
        return args.func(args)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, DragGANError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
