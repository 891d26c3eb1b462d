"""Command line: `python -m draggan.training train|export [--option value ...]`.

`train` runs or resumes the renderer-supervised generator run in `--run-dir` (options are the fields of
`TrainConfig`); `export` writes that run's EMA generator to a converted-model folder.
"""

from __future__ import annotations

import argparse
import dataclasses

from .train import TrainConfig, Trainer, train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m draggan.training")
    parser.add_argument("command", choices=("train", "export"))
    parser.add_argument("--max-seconds", type=float, default=None, help="stop (with a checkpoint) after this long")
    parser.add_argument("--export-dir", default=None, help="converted-model folder to write the EMA generator to")
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    if args.command == "train":
        train(cfg, max_seconds=args.max_seconds, export_dir=args.export_dir)
    else:
        if args.export_dir is None:
            raise SystemExit("export needs --export-dir")
        print(Trainer(cfg).export(args.export_dir))


if __name__ == "__main__":
    main()
