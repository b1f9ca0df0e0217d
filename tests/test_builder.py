"""The built modules: exact reference parameter counts and the block semantics behind them."""

from __future__ import annotations

import math

import pytest
import torch

from nas.blocks import MBConv, SqueezeExcite, StochasticDepth
from nas.builder import build_model, count_params
from nas.scaling import paper_member
from nas.spec import load_spec

# Reference parameter counts at 1000 classes: torchvision's EfficientNet_B{k}_Weights and
# EfficientNet_V2_S_Weights metadata, and timm's efficientnet_lite0.
REFERENCE_PARAMS = {
    0: 5_288_548, 1: 7_794_184, 2: 9_109_994, 3: 12_233_232,
    4: 19_341_616, 5: 30_389_784, 6: 43_040_704, 7: 66_347_960,
}
LITE0_PARAMS = 4_652_008
V2S_PARAMS = 21_458_488


@pytest.mark.parametrize("k", range(8))
def test_paper_family_parameter_counts_are_exact(b0, k):
    assert count_params(build_model(paper_member(b0, k))) == REFERENCE_PARAMS[k]


def test_lite0_and_v2s_parameter_counts_are_exact():
    assert count_params(build_model(load_spec("efficientnet_lite0"))) == LITE0_PARAMS
    assert count_params(build_model(load_spec("efficientnetv2_s"))) == V2S_PARAMS


def test_lite_has_relu6_and_no_se():
    model = build_model(load_spec("efficientnet_lite0"))
    assert not any(isinstance(m, SqueezeExcite) for m in model.modules())
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())


def test_se_squeezes_from_block_input_channels(b0):
    model = build_model(b0)
    block = model.stages[1][0]        # 16 -> 24, expand 6: 96 mid channels, squeeze int(16 * 0.25) = 4
    se = next(m for m in block.modules() if isinstance(m, SqueezeExcite))
    assert (se.reduce.in_channels, se.reduce.out_channels) == (96, 4)


@pytest.mark.parametrize("name, stem_stride", [("efficientnet_b0", 2), ("efficientnet_b0", 1),
                                               ("efficientnetv2_s", 2)])
def test_one_sequential_per_stage_at_the_strides_it_exposes(name, stem_stride):
    spec = load_spec(name).replace(stem_stride=stem_stride)
    model = build_model(spec).eval()
    assert [len(stage) for stage in model.stages] == [st.repeats for st in spec.stages]
    assert all(isinstance(stage, torch.nn.Sequential) for stage in model.stages)
    sides = []
    hooks = [stage.register_forward_hook(lambda mod, inp, out: sides.append(out.shape[-1]))
             for stage in model.stages]
    r = 37                            # odd, so each stride-2 stage rounds up
    with torch.no_grad():
        model(torch.zeros(1, 3, r, r))
    for h in hooks:
        h.remove()
    assert sides == [math.ceil(r / s) for s in model.stage_strides]
    assert model.stage_strides[-1] == spec.total_stride == 16 * stem_stride


def test_small_images_any_classes_and_channels(b0):
    spec = b0.replace(stem_stride=1)
    model = build_model(spec, num_classes=7, in_channels=1).eval()
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 7)
    # stride 1 in the stem keeps 4x more spatial positions after the stem
    assert model.stem(x).shape[-1] == 8
    assert build_model(b0, in_channels=1).stem(x).shape[-1] == 4


def test_stochastic_depth_drops_only_in_training(b0):
    torch.manual_seed(0)
    sd = StochasticDepth(0.5)
    x = torch.ones(1000, 1, 1, 1)
    y = sd.train()(x)
    dropped = (y == 0).float().mean().item()
    assert 0.4 < dropped < 0.6 and torch.allclose(y[y > 0], torch.tensor(2.0))  # survivors scaled by 1/(1-p)
    assert torch.equal(sd.eval()(x), x)
    blocks = [m for m in build_model(b0).modules() if isinstance(m, MBConv)]
    assert [b.residual for b in blocks[:3]] == [False, False, True]


def test_training_mode_is_stochastic_and_eval_is_not(b0):
    model = build_model(b0.replace(stem_stride=1), num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
