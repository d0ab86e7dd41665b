"""Model configurations as plain dicts: ``paper`` (docs/design.md), ``tiny`` (same code, small numbers)
and ``live`` (MobileNetV3 encoders for real-time video on a CPU).

A configuration has one section per branch: ``spd`` (front-end, ASPP, decoder), ``caption``
(the pre-training head) and ``spgm`` (encoder, TST, AFT decoder, ablation flags). The ``spd`` and
``spgm`` sections pick their encoder with ``"encoder"``: ``"resnet"`` (the default when absent;
``depth``, ``width``) or ``"mobilenetv3"`` (``arch``, ``width_mult``). Each also has a
``stream`` section, how it was designed to be streamed (:func:`stream_defaults`; the values are
:data:`spgim.stream_defaults.CONFIGURATION_STREAMS`). Checkpoints store the whole configuration;
:func:`config_differences` names what differs between two.
"""

from __future__ import annotations

import copy
from typing import Any

from spgim.errors import SpgimError
from spgim.stream_defaults import CONFIGURATION_STREAMS, StreamDefaults

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {
        "name": "paper",
        "image_size": 512,
        "spd": {
            "depth": 50,
            "width": 64,
            "aspp_channels": 256,
            "aspp_rates": [6, 12, 18],
            "decoder_low_channels": 48,
            "decoder_channels": 256,
        },
        "caption": {
            "image_size": 224,
            "width": 512,
            "layers": 1,
            "heads": 8,
            "ffn": 2048,
            "dropout": 0.1,
            "vocab_size": 4096,
            "max_len": 32,
            "pad_id": 0,
            "sos_id": 1,
            "eos_id": 2,
        },
        "spgm": {
            "depth": 50,
            "width": 64,
            "use_tst": True,
            "use_aft": True,
            "tst_stages": ["res2", "res3", "res4"],
            "tst_key_ratio": 0.25,
            "tst_scale": None,
            "tst_kv_stride": 1,
            "decoder_channels": [512, 256, 128, 16],
            "bottleneck_convs": 2,
            "aft_dilations": [2, 4, 8],
            "aft_separable": 7,
        },
        "stream": CONFIGURATION_STREAMS["paper"].design(),
    },
    "tiny": {
        "name": "tiny",
        "image_size": 128,
        "spd": {
            "depth": 18,
            "width": 16,
            "aspp_channels": 32,
            "aspp_rates": [6, 12, 18],
            "decoder_low_channels": 8,
            "decoder_channels": 32,
        },
        "caption": {
            "image_size": 64,
            "width": 64,
            "layers": 1,
            "heads": 4,
            "ffn": 128,
            "dropout": 0.0,
            "vocab_size": 512,
            "max_len": 24,
            "pad_id": 0,
            "sos_id": 1,
            "eos_id": 2,
        },
        "spgm": {
            "depth": 18,
            "width": 16,
            "use_tst": True,
            "use_aft": True,
            "tst_stages": ["res2", "res3", "res4"],
            "tst_key_ratio": 0.25,
            "tst_scale": None,
            "tst_kv_stride": 1,
            "decoder_channels": [64, 32, 16, 8],
            "bottleneck_convs": 1,
            "aft_dilations": [2, 4, 8],
            "aft_separable": 5,
        },
        "stream": CONFIGURATION_STREAMS["tiny"].design(),
    },
    # Real-time video matting on 2 CPU cores (720p30 end to end): SPD runs on keyframes only and
    # should take <= ~40 ms, SPGM runs on every frame and should take <= ~10-12 ms, in ONNX Runtime
    # with 2 threads at the working size. scripts/live_encoders.py measures the candidates; on a
    # shared 2-core EPYC (CPU time / 2 threads, 384x224): SPD ~17 ms, SPGM ~8 ms; at 512x288 SPD
    # ~30 ms, SPGM ~15 ms. The working size is 320 (320x192 for 16:9; why: CONFIGURATION_STREAMS). The decoder's
    # cost is in its OS2/OS1 levels, not the encoder: the last AFT level runs at OS2 (refine_stride 2;
    # at full resolution it is ~2x SPGM's whole time) with 4 channels; TST attends at res4 only (576
    # tokens at 512x288).
    "live": {
        "name": "live",
        "image_size": 256,
        "spd": {
            "encoder": "mobilenetv3",
            "arch": "large",
            "width_mult": 1.0,
            "aspp_channels": 64,
            "aspp_rates": [3, 6, 9],
            "decoder_low_channels": 16,
            "decoder_channels": 32,
        },
        "caption": {
            "image_size": 224,
            "width": 128,
            "layers": 1,
            "heads": 4,
            "ffn": 512,
            "dropout": 0.1,
            "vocab_size": 4096,
            "max_len": 32,
            "pad_id": 0,
            "sos_id": 1,
            "eos_id": 2,
        },
        "spgm": {
            "encoder": "mobilenetv3",
            "arch": "small",
            "width_mult": 1.0,
            "use_tst": True,
            "use_aft": True,
            "tst_stages": ["res4"],
            "tst_key_ratio": 0.25,
            "tst_scale": None,
            "tst_kv_stride": 1,
            "decoder_channels": [16, 16, 8, 4],
            "bottleneck_convs": 1,
            "aft_dilations": [2, 4, 8],
            "aft_separable": 5,
            "refine_stride": 2,
        },
        "stream": CONFIGURATION_STREAMS["live"].design(),
    },
}

# The recurrent live SPGM under study (``spgm.recurrent``): ConvGRU memory over half the channels of the decoder's
# levels at output strides 16, 8 and 4 of the working size; the finest level stays stateless (memory-bound here).
LIVE_RECURRENT: dict[str, Any] = {"levels": ["os16", "os8", "os4"], "fraction": 0.5}

# Paper Table 4's ablation variants as (use_tst, use_aft).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "basic": (False, False),
    "basic+aft": (False, True),
    "spg-im-wo-aft": (True, False),
    "spg-im": (True, True),
}


def get_config(name: str, *, variant: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A deep copy of a named configuration.

    Args:
        name: ``"paper"``, ``"tiny"`` or ``"live"``.
        variant: one of :data:`VARIANTS`; sets ``spgm.use_tst`` and ``spgm.use_aft``.
        overrides: ``section__key=value`` pairs, e.g. ``caption__vocab_size=1000``.
    """
    if name not in MODEL_CONFIGS:
        raise SpgimError(f"unknown configuration {name!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    config = copy.deepcopy(MODEL_CONFIGS[name])
    if variant is not None:
        if variant not in VARIANTS:
            raise SpgimError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        config["spgm"]["use_tst"], config["spgm"]["use_aft"] = VARIANTS[variant]
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if section not in config or not isinstance(config[section], dict) or field not in config[section]:
            raise SpgimError(f"unknown configuration field {section}.{field}")
        config[section][field] = value
    return config


def stream_defaults(config: dict[str, Any]) -> StreamDefaults:
    """How a configuration (or the one a checkpoint stores) was designed to be streamed: its ``stream``
    section over :class:`~spgim.stream_defaults.StreamDefaults`' defaults (a checkpoint made before a key
    existed lacks it). The guide's blur is not a configuration's: export takes it from the SPD checkpoint."""
    return StreamDefaults.from_record(config.get("stream"), f"configuration {config.get('name')!r}'s stream section")


def config_differences(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two configurations differ, each as ``path: expected X, found Y``.

    A key absent on one side and None on the other is no difference: optional keys added later (``spgm.recurrent``)
    are None where unset, and checkpoints saved before them do not have them.
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if expected.get(key) is None and actual.get(key) is None:
                continue
            if key not in actual:
                out.append(f"{path}: expected {expected[key]!r}, found nothing")
            elif key not in expected:
                out.append(f"{path}: not expected, found {actual[key]!r}")
            else:
                out.extend(config_differences(expected[key], actual[key], path))
        return out
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        expected, actual = list(expected), list(actual)
    return [] if expected == actual else [f"{prefix}: expected {expected!r}, found {actual!r}"]
