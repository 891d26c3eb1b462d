"""Convert TF-era StyleGAN2 generators (NVIDIA `stylegan2` / `stylegan2-ada` TensorFlow pickles) to PyTorch.

Files such as `stylegan2-car-config-f.pkl` hold a (G, D, Gs) tuple of `dnnlib.tflib.network.Network`
objects, read by `read_network_pickle` as `TFNetwork` records. `generator_from_tf(Gs)` derives our
`stylegan2.Generator` constructor kwargs from the pickled static kwargs and variable shapes, builds it through
`build_generator` and fills every parameter and buffer from the TF variables, with the layout changes the
TF graph implies (HWIO kernels, flipped kernels of transposed up-sampling convolutions, modulation bias
stored without its +1 offset, batch-dimension wrappers on constants and noise). `generator_description(Gs)`
hands the result on as the plain (config, tensors) description every model reader gives `builders`.

The conversion is strict: every tensor of our model is produced exactly once, every TF variable is either
consumed or on an explicit list of inference-irrelevant ones, and unsupported configurations (StyleGAN1,
'resnet' synthesis, label concatenation of the original StyleGAN2 code, unknown kwargs) raise `ValueError`.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import torch

from ..networks.ops import ACTIVATION_GAINS
from .builders import build_generator, generator_config
from .nvidia_pickle import TFNetwork

Transform = Callable[[np.ndarray], np.ndarray]

_MIN_TF_VERSION = 4

# Static kwargs that do not change what the trained generator computes at inference time.
_IGNORED_KWARGS = {
    "truncation_psi": "truncation is chosen per call in our API",
    "truncation_cutoff": "truncation is chosen per call in our API",
    "truncation_psi_val": "validation-time truncation only",
    "truncation_cutoff_val": "validation-time truncation only",
    "style_mixing_prob": "training-time regularisation only",
    "structure": "progressive-growing graph layout; the output at lod 0 does not depend on it",
    "conditioning": "training bookkeeping",
    "fused_modconv": "grouped vs. per-sample convolution: same result",
    "randomize_noise": "noise is chosen per call (noise_mode)",
    "dtype": "compute precision only; we compute in float32",
    "dlatent_broadcast": "equals num_ws, checked against the variables",
    "is_template_graph": "graph construction detail",
}

# Static kwargs that we translate or validate (mapping_fmaps / label_fmaps: read from the variable shapes).
_USED_KWARGS = ("latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "fmap_base", "fmap_max",
                "fmap_min", "fmap_decay", "fmap_const", "num_fp16_res", "conv_clamp", "architecture",
                "resample_kernel", "use_noise", "nonlinearity", "mapping_layers", "mapping_fmaps", "label_fmaps",
                "mapping_nonlinearity", "mapping_lrmul", "normalize_latents", "dlatent_avg_beta", "w_avg_beta",
                "mapping_func", "synthesis_func")

_SUPPORTED_MAPPING_FUNCS = ("G_mapping",)
_SUPPORTED_SYNTHESIS_FUNCS = ("G_synthesis", "G_synthesis_stylegan2", "G_synthesis_stylegan_revised")


def _dense(v: np.ndarray) -> np.ndarray:
    return v.transpose()


def _conv(v: np.ndarray) -> np.ndarray:
    return v.transpose(3, 2, 0, 1)


def _conv_up(v: np.ndarray) -> np.ndarray:
    return v[::-1, ::-1].transpose(3, 2, 0, 1)


def _mod_bias(v: np.ndarray) -> np.ndarray:
    return v + 1


def _first(v: np.ndarray) -> np.ndarray:
    return v[0]


def _first2(v: np.ndarray) -> np.ndarray:
    return v[0, 0]


def _same(v: np.ndarray) -> np.ndarray:
    return v


def _merged_static_kwargs(Gs: TFNetwork) -> dict[str, Any]:
    """Gs's static kwargs plus those only its components carry; a conflicting value is an error."""
    merged = dict(Gs.static_kwargs)
    for comp_name, comp in Gs.components.items():
        for key, value in comp.static_kwargs.items():
            if key in merged and merged[key] != value and key != "dlatent_broadcast":
                raise ValueError(f"TF pickle: kwarg {key!r} is {merged[key]!r} in Gs but {value!r} in "
                                 f"component {comp_name!r}")
            merged.setdefault(key, value)
    return merged


def _func_name(net: TFNetwork) -> str:
    return str(net.state.get("build_func_name", ""))


def _check_supported(Gs: TFNetwork, kw: dict[str, Any], tf_vars: dict[str, np.ndarray]) -> None:
    """Refuse pickles we cannot convert faithfully, naming the reason."""
    version = Gs.state.get("version", 0)
    if not isinstance(version, int) or version < _MIN_TF_VERSION:
        raise ValueError(f"TF pickle: network format version {version!r} is older than StyleGAN2's "
                         f"({_MIN_TF_VERSION}); StyleGAN1 and earlier networks are not supported")
    components = Gs.components
    if set(components) != {"mapping", "synthesis"}:
        raise ValueError(f"TF pickle: expected a generator with components 'mapping' and 'synthesis', "
                         f"got {sorted(components)}")
    func_names = [_func_name(Gs)] + [_func_name(c) for c in components.values()]
    if any(name.rsplit(".", 1)[0].endswith("networks_stylegan") for name in func_names) or \
            any("/StyleMod/" in name or "/Epilogue" in name for name in tf_vars):
        raise ValueError("TF pickle: this is a StyleGAN1 (networks_stylegan.G_style) generator; only "
                         "StyleGAN2 / StyleGAN2-ADA generators are supported")
    mapping_func = str(kw.get("mapping_func", "G_mapping"))
    if mapping_func not in _SUPPORTED_MAPPING_FUNCS:
        raise ValueError(f"TF pickle: mapping network {mapping_func!r} is not supported")
    synthesis_func = str(kw.get("synthesis_func", "G_synthesis_stylegan2"))
    if synthesis_func not in _SUPPORTED_SYNTHESIS_FUNCS:
        raise ValueError(f"TF pickle: synthesis network {synthesis_func!r} is not supported "
                         f"(supported: {', '.join(_SUPPORTED_SYNTHESIS_FUNCS)})")
    if kw.get("architecture") == "resnet" or any(re.fullmatch(r"synthesis/\d+x\d+/Skip/.*", n) for n in tf_vars):
        raise ValueError("TF pickle: synthesis architecture 'resnet' is not supported (only 'skip' and 'orig')")
    if "mapping/LabelConcat/weight" in tf_vars:
        raise ValueError("TF pickle: conditional generators of the original StyleGAN2 code (label "
                         "concatenation, 'LabelConcat') are not supported; StyleGAN2-ADA's 'LabelEmbed' is")
    if not kw.get("normalize_latents", True):
        raise ValueError("TF pickle: normalize_latents=False is not supported")
    if float(kw.get("fmap_decay", 1)) != 1:
        raise ValueError(f"TF pickle: fmap_decay={kw['fmap_decay']!r} is not supported (only 1)")
    if kw.get("fmap_const") is not None:
        raise ValueError("TF pickle: fmap_const (a constant input wider than the 4x4 convolution) is not supported")
    for key in ("nonlinearity", "mapping_nonlinearity"):
        if kw.get(key, "lrelu") not in ACTIVATION_GAINS:
            raise ValueError(f"TF pickle: {key}={kw[key]!r} is not supported (supported: {sorted(ACTIVATION_GAINS)})")


def tf_generator_kwargs(Gs: TFNetwork) -> dict[str, Any]:
    """Our `stylegan2.Generator` constructor kwargs (JSON-able) for a TF-era StyleGAN2 `Gs` network."""
    kw = _merged_static_kwargs(Gs)
    tf_vars = Gs.variables()
    _check_supported(Gs, kw, tf_vars)
    unknown = sorted(set(kw) - set(_IGNORED_KWARGS) - set(_USED_KWARGS))
    if unknown:
        raise ValueError(f"TF pickle: unknown static kwarg(s) {unknown}; refusing to guess their effect")

    def kwarg(name: str, default: Any) -> Any:
        assert name in _USED_KWARGS
        value = kw.get(name)
        return default if value is None else value

    z_dim = int(kwarg("latent_size", 512))
    c_dim = int(kwarg("label_size", 0))
    w_dim = int(kwarg("dlatent_size", 512))
    img_resolution = int(kwarg("resolution", 1024))
    img_channels = int(kwarg("num_channels", 3))
    channel_base = int(kwarg("fmap_base", 16384)) * 2
    channel_max = int(kwarg("fmap_max", 512))
    resample_filter = [1, 3, 3, 1]
    if "resample_kernel" in kw:
        kernel = kw["resample_kernel"]
        resample_filter = [1, 1] if kernel is None else [float(t) for t in kernel]
    synthesis_kwargs: dict[str, Any] = dict(
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=int(kwarg("num_fp16_res", 0)),
        conv_clamp=kw.get("conv_clamp"),
        architecture=_synthesis_architecture(kw, tf_vars),
        resample_filter=resample_filter,
        use_noise=bool(kwarg("use_noise", True)),
        activation=str(kwarg("nonlinearity", "lrelu")),
    )
    mapping_kwargs: dict[str, Any] = dict(
        num_layers=_count_mapping_layers(tf_vars),
        embed_features=None,
        layer_features=None,
        activation=str(kwarg("mapping_nonlinearity", "lrelu")),
        lr_multiplier=float(kwarg("mapping_lrmul", 0.01)),
        w_avg_beta=_w_avg_beta(kw),
    )
    if "mapping_layers" in kw and int(kw["mapping_layers"]) != mapping_kwargs["num_layers"]:
        raise ValueError(f"TF pickle: mapping_layers={kw['mapping_layers']} but the variables hold "
                         f"{mapping_kwargs['num_layers']} mapping layers")
    if mapping_kwargs["num_layers"] > 1:
        mapping_kwargs["layer_features"] = int(tf_vars["mapping/Dense0/weight"].shape[1])
    if c_dim > 0 and "mapping/LabelEmbed/weight" in tf_vars:
        mapping_kwargs["embed_features"] = int(tf_vars["mapping/LabelEmbed/weight"].shape[1])
    if kw.get("fmap_min") is not None:
        log2 = img_resolution.bit_length() - 1
        for res in (2 ** i for i in range(2, log2 + 1)):
            ours = min(channel_base // res, channel_max)
            if int(kw["fmap_min"]) > ours:
                raise ValueError(f"TF pickle: fmap_min={kw['fmap_min']} widens the {res}x{res} layers, "
                                 "which our channel rule cannot express")
    return dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)


def _w_avg_beta(kw: dict[str, Any]) -> float:
    """TF's W-average decay (training only); None there means "no update", i.e. a decay of 1."""
    beta = kw.get("dlatent_avg_beta", kw.get("w_avg_beta", 0.995))
    return 1.0 if beta is None else float(beta)


def _count_mapping_layers(tf_vars: dict[str, np.ndarray]) -> int:
    count = 0
    while f"mapping/Dense{count}/weight" in tf_vars:
        count += 1
    if count == 0:
        raise ValueError("TF pickle: no mapping layers ('mapping/Dense0/weight' is missing)")
    return count


def _is_progressive(tf_vars: dict[str, np.ndarray]) -> bool:
    """Configs B-D (`G_synthesis_stylegan_revised`) name their outputs `ToRGB_lod{n}`, one per resolution."""
    return any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", name) for name in tf_vars)


def _synthesis_architecture(kw: dict[str, Any], tf_vars: dict[str, np.ndarray]) -> str:
    """'skip' or 'orig'; a progressive-growing generator at lod 0 is an 'orig' one (only its last ToRGB)."""
    if _is_progressive(tf_vars):
        if "architecture" in kw and kw["architecture"] != "orig":
            raise ValueError(f"TF pickle: progressive-growing synthesis with architecture={kw['architecture']!r}")
        lod = tf_vars.get("synthesis/lod")
        if lod is not None and float(lod) != 0:
            raise ValueError(f"TF pickle: progressive-growing generator saved mid-transition (lod={float(lod)}); "
                             "only fully grown (lod 0) generators are supported")
        return "orig"
    architecture = str(kw.get("architecture", "skip"))
    if architecture not in ("skip", "orig"):
        raise ValueError(f"TF pickle: synthesis architecture {architecture!r} is not supported")
    return architecture


def _conversion_plan(G: torch.nn.Module, progressive: bool) -> dict[str, tuple[str, Transform]]:
    """Our state_dict key → (TF variable name, layout transform), built by walking our architecture."""
    plan: dict[str, tuple[str, Transform]] = {}

    def take(key: str, tf_name: str, fn: Transform = _same) -> None:
        assert key not in plan, f"{key} assigned twice"
        plan[key] = (tf_name, fn)

    mapping = G.mapping
    if mapping.num_ws is not None and hasattr(mapping, "w_avg"):
        take("mapping.w_avg", "dlatent_avg")
    if mapping.c_dim > 0:
        take("mapping.embed.weight", "mapping/LabelEmbed/weight", _dense)
        take("mapping.embed.bias", "mapping/LabelEmbed/bias")
    for idx in range(mapping.num_layers):
        take(f"mapping.fc{idx}.weight", f"mapping/Dense{idx}/weight", _dense)
        take(f"mapping.fc{idx}.bias", f"mapping/Dense{idx}/bias")

    synthesis = G.synthesis
    log2_res = synthesis.img_resolution.bit_length() - 1
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        ours = f"synthesis.b{res}"
        scope = f"synthesis/{res}x{res}"
        log2 = res.bit_length() - 1
        if res == 4:
            take(f"{ours}.const", f"{scope}/Const/const", _first)
            layers = [("conv1", "Conv", _conv, 0)]
        else:
            layers = [("conv0", "Conv0_up", _conv_up, 2 * log2 - 5), ("conv1", "Conv1", _conv, 2 * log2 - 4)]
        for name, tf_layer, weight_fn, noise_idx in layers:
            layer = getattr(block, name)
            take(f"{ours}.{name}.weight", f"{scope}/{tf_layer}/weight", weight_fn)
            take(f"{ours}.{name}.bias", f"{scope}/{tf_layer}/bias")
            take(f"{ours}.{name}.affine.weight", f"{scope}/{tf_layer}/mod_weight", _dense)
            take(f"{ours}.{name}.affine.bias", f"{scope}/{tf_layer}/mod_bias", _mod_bias)
            if layer.use_noise:
                take(f"{ours}.{name}.noise_strength", f"{scope}/{tf_layer}/noise_strength")
                take(f"{ours}.{name}.noise_const", f"synthesis/noise{noise_idx}", _first2)
        if block.num_torgb:
            rgb = f"synthesis/ToRGB_lod{log2_res - log2}" if progressive else f"{scope}/ToRGB"
            take(f"{ours}.torgb.weight", f"{rgb}/weight", _conv)
            take(f"{ours}.torgb.bias", f"{rgb}/bias")
            take(f"{ours}.torgb.affine.weight", f"{rgb}/mod_weight", _dense)
            take(f"{ours}.torgb.affine.bias", f"{rgb}/mod_bias", _mod_bias)
    return plan


def _ignored_variables(tf_vars: dict[str, np.ndarray], progressive: bool) -> dict[str, str]:
    """TF variables that have no counterpart in our model, each with the reason it is safe to drop."""
    ignored = {}
    if "lod" in tf_vars:
        ignored["lod"] = "G_main's progressive-growing level: only steers training-time style mixing"
    if progressive:
        if "synthesis/lod" in tf_vars:
            ignored["synthesis/lod"] = "checked to be 0: the generator is fully grown"
        for name in tf_vars:
            match = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/.*", name)
            if match and int(match.group(1)) > 0:
                ignored[name] = "lower-resolution progressive-growing output, unused at lod 0"
    return ignored


def _is_derived_buffer(key: str) -> bool:
    """FIR filter buffers come from the `resample_filter` kwarg (TF builds them from `resample_kernel`)."""
    return key.endswith(".resample_filter")


def generator_from_tf(Gs: TFNetwork) -> torch.nn.Module:
    """Build our StyleGAN2 generator (eval mode, no grads) from a TF-era `Gs` network and copy its weights."""
    if not isinstance(Gs, TFNetwork):
        raise TypeError(f"expected a TFNetwork (the Gs of a TF pickle), got {type(Gs).__name__}")
    kwargs = tf_generator_kwargs(Gs)
    tf_vars = Gs.variables()
    progressive = _is_progressive(tf_vars)
    G = build_generator("stylegan2", kwargs)
    ours = G.state_dict()
    plan = _conversion_plan(G, progressive)
    derived = {key for key in ours if _is_derived_buffer(key)}
    unplanned = set(ours) - set(plan) - derived
    extra = set(plan) - set(ours)
    if unplanned or extra:
        raise RuntimeError(f"TF conversion plan out of sync with stylegan2.Generator: "
                           f"unplanned {sorted(unplanned)}, unknown {sorted(extra)}")

    missing = sorted({tf_name for tf_name, _ in plan.values() if tf_name not in tf_vars})
    if missing:
        raise ValueError(f"TF pickle is missing variable(s) {missing} required by this configuration")
    state: dict[str, torch.Tensor] = {key: ours[key] for key in derived}
    used = set()
    for key, (tf_name, fn) in plan.items():
        value = np.array(fn(np.asarray(tf_vars[tf_name], dtype=np.float32)), dtype=np.float32, order="C")
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ValueError(f"TF pickle: variable {tf_name!r} has shape {tuple(tf_vars[tf_name].shape)}, which "
                             f"does not give {key} its expected shape {tuple(ours[key].shape)} "
                             "(unsupported configuration or inconsistent kwargs)")
        state[key] = torch.from_numpy(value)
        used.add(tf_name)
    unused = sorted(set(tf_vars) - used - set(_ignored_variables(tf_vars, progressive)))
    if unused:
        raise ValueError(f"TF pickle has variable(s) our StyleGAN2 has no place for: {unused} "
                         "(unsupported configuration)")
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


def generator_description(Gs: TFNetwork) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(converted-model config, tensors by name) of a TF-era `Gs`, for `builders.generator_from_state`.

    Converting the variables needs our module's layout, so the generator is built here and its state handed on.
    """
    G = generator_from_tf(Gs)
    return generator_config(G), G.state_dict()
