"""Upload the app to a Hugging Face Space through the Hub API: `python -m draggan.deploy --space owner/name`.

The Hub refuses a `git push` of binary files not stored through LFS/Xet (the bundled models, sample PNGs),
so the folder goes up with `HfApi.upload_folder`, which stores binaries the right way by itself. The files
sent are the repository folder minus `IGNORE_PATTERNS` and huggingface_hub's own `DEFAULT_IGNORE_PATTERNS`,
selected by huggingface_hub's `filter_repo_objects` over the same listing `upload_folder` makes, so
`--dry-run` prints exactly what a real upload would send (and sends nothing, needing no token). A real upload
mirrors the folder: files on the Space that are no longer in it are deleted (`.gitattributes` is always
kept by the Hub client); `--keep-stale` leaves them.

The token is `HF_TOKEN` (or `--token`); the Space id `--space` or `HF_SPACE_ID`. The README's front matter is
the Space card. Imports only huggingface_hub, so a deploy job needs no torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE_ENV = "HF_SPACE_ID"
IGNORE_PATTERNS = [
    "tests/*", "bench/*", ".ci/*", ".github/*", "runs/*", "out/*", "scratch/*", "flagged/*",
    ".pytest_cache/*", ".benchmarks/*", ".gradio/*", ".venv/*", "*.egg-info/*",
    "__pycache__/*", "*/__pycache__/*", "*.pyc",
    "*.pyi",                     # stubs Gradio writes next to our component subclasses (draggan/app/served.py)
]


def _all_ignore_patterns() -> list[str]:
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    return [*IGNORE_PATTERNS, *DEFAULT_IGNORE_PATTERNS]


def upload_plan(folder: str | os.PathLike = REPO_ROOT) -> list[str]:
    """The repo-relative paths (POSIX, sorted) a deploy of `folder` uploads, selected as `upload_folder` does."""
    from huggingface_hub.utils import filter_repo_objects

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"not a folder: {folder}")
    listing = [path.relative_to(root).as_posix() for path in sorted(root.glob("**/*")) if path.is_file()]
    return list(filter_repo_objects(listing, ignore_patterns=_all_ignore_patterns()))


def deploy(space_id: str, folder: str | os.PathLike = REPO_ROOT, token: str | None = None,
           keep_stale: bool = False, commit_message: str = "Deploy DragGAN studio") -> str:
    """Create the Gradio Space if needed and upload `folder` to it; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    info = api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(Path(folder).resolve()),
                             ignore_patterns=list(IGNORE_PATTERNS), delete_patterns=None if keep_stale else ["*"],
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m draggan.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=os.environ.get(SPACE_ENV), help=f"Space id owner/name (env {SPACE_ENV})")
    parser.add_argument("--folder", default=str(REPO_ROOT), help="folder to upload (default: this repository)")
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded, upload nothing")
    parser.add_argument("--keep-stale", action="store_true", help="do not delete Space files missing from the folder")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN)")
    parser.add_argument("--message", default="Deploy DragGAN studio", help="commit message on the Space")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a deploy (or a dry run); returns the process exit code."""
    args = build_parser().parse_args(argv)
    files = upload_plan(args.folder)
    if args.dry_run:
        print("\n".join(files))
        print(f"{len(files)} files would be uploaded" + (f" to {args.space}" if args.space else ""), file=sys.stderr)
        return 0
    if not args.space or args.space.count("/") != 1:
        print(f"error: name the Space as owner/name with --space or {SPACE_ENV}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("HF_TOKEN")
    if not token:
        print("error: no Hub token: set HF_TOKEN (a write token for the Space's owner)", file=sys.stderr)
        return 2
    url = deploy(args.space, args.folder, token=token, keep_stale=args.keep_stale, commit_message=args.message)
    print(f"uploaded {len(files)} files to https://huggingface.co/spaces/{args.space} ({url})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
