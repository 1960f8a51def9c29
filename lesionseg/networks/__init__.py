"""Networks for lesion segmentation: a registry of builders, each network listing its blocks for transfer."""
from lesionseg.networks.freezing import LoadReport, freeze_blocks, load_pretrained, network_blocks
from lesionseg.networks.ratlesnetv2 import RatLesNetV2
from lesionseg.networks.registry import NETWORKS, build_network

__all__ = [
    "NETWORKS",
    "LoadReport",
    "RatLesNetV2",
    "build_network",
    "freeze_blocks",
    "load_pretrained",
    "network_blocks",
]
