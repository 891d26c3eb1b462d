"""Load a generator from any model source: local pickle, converted cache, zoo key or Hugging Face Hub file.

The pipeline (resolve, read, build, cache write) is `loader`; this package face hands its names on.
"""

from __future__ import annotations

from ..errors import ModelFormatError, ModelIntegrityError, ModelUnavailableError, UnknownModelError, UnsafePickleError
from .loader import generator_from_pickle, load_converted, load_generator, read_config, save_converted
from .nvidia_pickle import PersistentObject, TFNetwork, read_network_pickle

__all__ = ["ModelFormatError", "ModelIntegrityError", "ModelUnavailableError", "PersistentObject", "TFNetwork",
           "UnknownModelError", "UnsafePickleError", "generator_from_pickle", "load_converted", "load_generator",
           "read_config", "read_network_pickle", "save_converted"]
