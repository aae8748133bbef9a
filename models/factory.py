"""One constructor for every trainable model, keyed by its config dict."""
from __future__ import annotations

from typing import Any

import torch.nn as nn


def model_from_config(model_cfg: dict[str, Any]) -> nn.Module:
    """``ArgusModel`` for an ``ArgusConfig`` dict, ``SASRecClassic`` for one with ``arch="sasrec-classic"``."""
    from .sasrec_classic import ARCH, SASRecClassic, SASRecClassicConfig

    if model_cfg.get("arch") == ARCH:
        return SASRecClassic(SASRecClassicConfig.from_dict(model_cfg))
    from .argus import ArgusModel
    from .config import ArgusConfig

    return ArgusModel(ArgusConfig.from_dict(model_cfg))
