"""A fixed sample of timm architectures spanning every SE class the converter reads and
every cause the census found (scripts/timm_census.py): each converts fully, in eval and
in train mode (rexnet's bottleneck BatchNorm with batch statistics through the split
ops), its eval logits with the CPU kernels stay within the whole-model rule, and its
float64 train-mode gradients and BatchNorm statistics equal the original's."""

from __future__ import annotations

import pytest
import torch

from test_convert import build, check_whole_model

pytest.importorskip("timm")

SAMPLE = [
    # SEModule (timm layers), incl. rexnet's BatchNorm, gcvit's GELU, sedarknet's LeakyReLU
    "seresnet18", "seresnext26d_32x4d", "seresnet33ts", "regnety_002", "regnetz_005",
    "rexnet_100", "rexnetr_100", "gcvit_xxtiny", "sedarknet21", "tresnet_m", "nf_regnet_b0",
    # legacy senet SEModule
    "legacy_seresnet18", "legacy_seresnext26_32x4d",
    # EffectiveSEModule
    "ese_vovnet19b_dw", "ese_vovnet19b_slim_dw",
    # EfficientNet / MobileNet SqueezeExcite, incl. hard_swish (fbnetv3, mobilenetv3_rw)
    "efficientnet_b0", "tf_efficientnet_b0", "mobilenetv3_small_050", "mobilenetv3_large_100",
    "mobilenetv3_rw", "fbnetv3_b", "tinynet_e", "mnasnet_small", "semnasnet_050", "mixnet_s",
    "tf_mixnet_s", "lcnet_050", "ghostnet_050", "hardcorenas_a", "fastvit_t8",
    # EcaModule
    "ecaresnet26t", "eca_resnet33ts", "eca_vovnet39b", "eca_nfnet_l0",
]


def _build(arch: str, train: bool = False):
    kwargs = {"img_size": 64} if arch.startswith("gcvit") else {}
    model = build(f"timm:{arch}", train=train, **kwargs)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # zero-initialised gains (NFNet skipinit, ...) would starve the SE
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("arch", SAMPLE)
def test_sample_architecture(arch):
    check_whole_model(_build(arch))
