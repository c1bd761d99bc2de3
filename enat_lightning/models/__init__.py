"""Pure-torch networks: ENAT, the NAT baseline, their configs and presets (no Lightning here)."""
from .conditioning import Captions, ClassCondition, Condition, ConditionedNetwork, TextCondition
from .config import ATTENTION_REMOVALS, PRESETS, ENATConfig, ModelConfig, NATConfig, NetworkConfig, config_from_dict, preset
from .enat import ENAT
from .tokens import ENATOutput
from .nat import NAT
from .official import config_from_official, convert_official_state_dict, from_official, load_official_weights


def build_model(cfg: ModelConfig) -> ConditionedNetwork:
    """The network for a config: ``ENAT`` for ENATConfig (class or text condition), ``NAT`` for NATConfig."""
    if isinstance(cfg, ENATConfig):
        return ENAT(cfg)
    if isinstance(cfg, NATConfig):
        return NAT(cfg)
    raise TypeError(f"expected ENATConfig or NATConfig, got {type(cfg).__name__}")


__all__ = ["ATTENTION_REMOVALS", "PRESETS", "Captions", "ClassCondition", "Condition", "ConditionedNetwork", "ENAT",
           "ENATConfig", "ENATOutput", "ModelConfig", "NAT", "NATConfig", "NetworkConfig", "TextCondition",
           "build_model", "config_from_dict", "config_from_official", "convert_official_state_dict", "from_official",
           "load_official_weights", "preset"]
