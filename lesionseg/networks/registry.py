"""The network registry: a name from ``params.yaml`` to the builder that makes that network."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from lesionseg.networks.monai_nets import UNETR, DynUNet, UNet
from lesionseg.networks.ratlesnetv2 import RatLesNetV2

__all__ = ["NETWORKS", "build_network"]

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "ratlesnetv2": RatLesNetV2,
    "unet": UNet,
    "dynunet": DynUNet,
    "unetr": UNETR,
}


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with the builder's keyword arguments (from ``params.yaml``).

    An unknown name, an argument the builder does not take, or a required one left out raises ``ValueError``.
    """
    if name not in NETWORKS:
        raise ValueError(f"network={name!r} is not one of {sorted(NETWORKS)}; use one of those names")
    builder = NETWORKS[name]
    params = inspect.signature(builder).parameters
    for key in kwargs:
        if key not in params:
            raise ValueError(f"network {name!r} takes no argument {key!r}; it takes {sorted(params)}")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in kwargs:
            raise ValueError(f"network {name!r} needs the argument {key!r}")
    return builder(**kwargs)
