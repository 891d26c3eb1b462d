"""Command line: `python -m draggan.training train|export|keypoints [--option value ...]`.

`train` runs or resumes the renderer-supervised generator run in `--run-dir` (options are the fields of
`TrainConfig`); `export` writes that run's EMA generator to a converted-model folder; `keypoints` runs or
resumes the keypoint-regressor run (options are the fields of `KeypointTrainConfig`).
"""

from __future__ import annotations

import argparse
import dataclasses

from .keypoints import KeypointTrainConfig, train_regressor
from .train import TrainConfig, Trainer, train


def _add_fields(parser: argparse.ArgumentParser, config_cls: type) -> None:
    parser.add_argument("--max-seconds", type=float, default=None, help="stop (with a checkpoint) after this long")
    parser.add_argument("--export-dir", default=None, help="folder to write the trained model to")
    for field in dataclasses.fields(config_cls):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)


def _config(args: argparse.Namespace, config_cls: type):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m draggan.training")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_fields(sub.add_parser("train", help="train / resume the generator"), TrainConfig)
    _add_fields(sub.add_parser("export", help="export a generator run's EMA generator"), TrainConfig)
    _add_fields(sub.add_parser("keypoints", help="train / resume the keypoint regressor"), KeypointTrainConfig)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(_config(args, TrainConfig), max_seconds=args.max_seconds, export_dir=args.export_dir)
    elif args.command == "export":
        if args.export_dir is None:
            parser.error("export needs --export-dir")
        print(Trainer(_config(args, TrainConfig)).export(args.export_dir))
    else:
        train_regressor(_config(args, KeypointTrainConfig), max_seconds=args.max_seconds,
                        export_dir=args.export_dir)


if __name__ == "__main__":
    main()
