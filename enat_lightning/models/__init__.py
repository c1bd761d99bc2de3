"""Pure-torch networks: ENAT, the NAT baseline, their configs and presets (no Lightning here)."""
from .config import ATTENTION_REMOVALS, PRESETS, ENATConfig, ModelConfig, NATConfig, NetworkConfig, config_from_dict, preset
from .enat import ENAT
from .tokens import ENATOutput
from .nat import NAT
from .text import TextContext, TextENAT, TextENATConfig
from .official import config_from_official, convert_official_state_dict, from_official, load_official_weights


def build_model(cfg: ModelConfig):
    """The network for a config: ``ENAT`` for ENATConfig, ``NAT`` for NATConfig, ``TextENAT`` for
    TextENATConfig."""
    if isinstance(cfg, ENATConfig):
        return ENAT(cfg)
    if isinstance(cfg, NATConfig):
        return NAT(cfg)
    if isinstance(cfg, TextENATConfig):
        return TextENAT(cfg)
    raise TypeError(f"expected ENATConfig, NATConfig or TextENATConfig, got {type(cfg).__name__}")


__all__ = ["ATTENTION_REMOVALS", "PRESETS", "ENAT", "ENATConfig", "ENATOutput", "ModelConfig", "NAT", "NATConfig", "NetworkConfig",
           "TextContext", "TextENAT", "TextENATConfig", "build_model", "config_from_dict", "config_from_official",
           "convert_official_state_dict", "from_official", "load_official_weights", "preset"]
