"""Time and memory to refuse each class of hostile edit recipe (issue 11), and the message each gets.

Usage: python -m bench.recipe_refusals [--json]

Each case is a recipe file written to a temporary folder and read with `draggan.recipes.load_recipe`, as the
app does with an upload. Per case: the file's size, wall seconds to the refusal, the peak of Python-traced
allocations (tracemalloc; numpy reports its arrays to it) and the growth of the process's peak resident set
size (`ru_maxrss`, which only ever grows), after one valid recipe was read to load the imports. The v1 case with `model` set to
`/dev/zero` is not refused: it is read as the current model, and the row shows what reading it cost.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

from draggan import recipes

Case = tuple[str, Callable[[dict[str, Any]], Any]]


def _base() -> dict[str, Any]:
    return {"format": recipes.RECIPE_FORMAT, "version": 2, "model": "current", "model_label": "bench",
            "seed": 0, "psi": 0.7, "space": "w+", "image_size": [512, 512],
            "drags": [{"handles": [[100.0, 100.0]], "targets": [[120.0, 110.0]], "steps": 50, "lr": 0.002,
                       "mask_lambda": 20.0, "tracker": "official", "resume": False, "mask": None}]}


def set_drag(**fields: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d["drags"][0].update(fields)


def nested_list(depth: int) -> list:
    value: list = [1.0, 2.0]
    for _ in range(depth):
        value = [value]
    return value


CASES: list[Case] = [
    ("rle claims 1.9 GB (200 bytes)", set_drag(mask={"size": [43590, 43590], "counts": [1900046100]})),
    ("rle + image 100k x 100k", lambda d: (d.update(image_size=[100_000, 100_000]),
                                           set_drag(mask={"size": [100_000, 100_000], "counts": [10**10]})(d))),
    ("steps = 1e9", set_drag(steps=1e9)),
    ("lr = NaN", set_drag(lr=float("nan"))),
    ("NaN coordinates", set_drag(handles=[[float("nan"), 1.0]])),
    ("5000 point pairs", set_drag(handles=[[1.0, 1.0]] * 5000, targets=[[2.0, 2.0]] * 5000)),
    ("201 drags", lambda d: d.update(drags=d["drags"] * 201)),
    ("points nested 5000 deep", None),
    ("5 MiB file", lambda d: d.update(model_label="x" * (5 * 2**20))),
    ("v1, model = /dev/zero", lambda d: d.update(version=1, model="/dev/zero")),
]


def _write(folder: Path, name: str, change: Callable | None) -> Path:
    path = folder / (name.replace(" ", "_").replace("/", "_") + ".json")
    if change is None:       # json.dumps cannot write 5000 levels: splice the nesting into the text
        text = json.dumps(_base()).replace('"handles": [[100.0, 100.0]]',
                                           '"handles": ' + "[" * 5000 + "1" + "]" * 5000)
    else:
        data = _base()
        change(data)
        text = json.dumps(data)
    path.write_text(text)
    return path


def _measure(path: Path) -> dict[str, Any]:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        recipe = recipes.load_recipe(path)
        outcome = f"read: model {recipe.model!r}, sha {recipe.model_sha256 or '-'}"
    except recipes.RecipeError as exc:
        outcome = f"refused: {exc}"
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return dict(bytes=path.stat().st_size, seconds=seconds, traced_mb=peak / 2**20, rss_growth_mb=rss / 1024,
                outcome=outcome)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        recipes.load_recipe(_write(Path(tmp), "warm-up", lambda d: None))    # imports and the zoo registry
        for name, change in CASES:
            row = dict(case=name, **_measure(_write(Path(tmp), name, change)))
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{name:30s} {row['bytes']:>9d} B {row['seconds'] * 1000:8.1f} ms {row['traced_mb']:7.1f} MB "
                      f"traced {row['rss_growth_mb']:6.1f} MB rss+  {row['outcome'][:90]}")


if __name__ == "__main__":
    main()
