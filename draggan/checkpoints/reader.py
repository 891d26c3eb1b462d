"""Read any model file into the one plain description a generator is built from: (config, tensors by name).

What a file is comes from its content, never its name: a converted model (a model folder, or a safetensors
weights file, read by `model_folder`), an NVIDIA network pickle (a dict with `G_ema`, described by
`nvidia_pickle`) or a TF-era one (a (G, D, Gs) tuple of TF networks, described by `tf_pickle`). The config is
the converted-model config (`builders.generator_config`) that `builders.generator_from_state` takes.
Every refusal is one `ModelFormatError` or `UnsafePickleError` line naming the file by the name it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import model_folder, tf_pickle
from .builders import exception_line
from ..errors import ModelFormatError, UnsafePickleError
from .nvidia_pickle import PersistentObject, TFNetwork, describe_contents, generator_description, read_network_pickle

Description = tuple[dict[str, Any], dict[str, torch.Tensor]]


def read_model(path: Path, name: str) -> Description:
    """(converted-model config, tensors) of a converted model or a network pickle at `path`; `name` is what
    messages call it."""
    if model_folder.is_model_folder(path):
        state, config = model_folder.load_model_folder(path)
        return config, state
    if path.is_dir():
        raise ModelFormatError(f"{name} is a folder but not a converted model (no {model_folder.CONFIG_FILE} + "
                               f"{model_folder.WEIGHTS_FILE})")
    try:
        obj = read_network_pickle(path)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except OSError as e:
        raise ModelFormatError(f"{name} could not be read ({type(e).__name__})") from None
    except Exception as e:  # any other failure of a hostile or broken file is a format error, in one line
        raise ModelFormatError(f"{name} is not a readable network pickle ({exception_line(e)})") from None
    nvidia = isinstance(obj, dict) and "G_ema" in obj
    if not nvidia and not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, TFNetwork) for n in obj)):
        raise ModelFormatError(f"{name} holds no generator: expected a dict with 'G_ema' or a TF (G, D, Gs) "
                               f"tuple, found {describe_contents(obj)}")
    if nvidia and not isinstance(obj["G_ema"], PersistentObject):
        raise ModelFormatError(f"{name}: 'G_ema' is {describe_contents(obj['G_ema'])}, not a network object")
    try:
        return generator_description(obj["G_ema"]) if nvidia else tf_pickle.generator_description(obj[2])
    except ModelFormatError as e:
        raise ModelFormatError(f"{name}: {e}") from None
    except Exception as e:
        raise ModelFormatError(f"{name}: unsupported {'generator' if nvidia else 'TF generator'} "
                               f"({exception_line(e)})") from None
