"""D' is exact (== autograd's VJP of the linearised surrogate) and independent of the input images."""
from __future__ import annotations

import pytest
import torch

from transplant.architectures import CLASSIFICATION, SEGMENTATION, teacher_specs, vgg_small
from transplant.pseudograd import draw_relu_masks, linearised_surrogate, pseudo_backward, relu_nodes
from transplant.spec import build_module, output_shape
from transplant.spec.fullyconv import enlarged_input_shape, fully_convolutional_module

FAMILIES = {"vgg-d3": vgg_small(width=4, depth=3, image_size=16, in_channels=1),
            "vgg-d4": vgg_small(width=4, depth=4, image_size=32, in_channels=3)}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


def surrogate_vjp(module, masks, G, x):
    x = x.clone().requires_grad_(True)
    y = linearised_surrogate(module, masks)(x)
    grad, = torch.autograd.grad(y, x, G)
    return grad


def random_module(task: str, family: str, dtype=torch.float64):
    torch.manual_seed(1)
    module = build_module(teacher_specs(FAMILIES[family]).tasks[task]).to(dtype)
    with torch.no_grad():  # batchnorm-free VGG: give biases values so a VJP that used them would show it
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return module


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("task", [CLASSIFICATION, SEGMENTATION])
@pytest.mark.parametrize("relu_mode", ["dummy_1st", "dummy_2nd"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_pseudo_backward_equals_vjp_of_linearised_surrogate(family, task, relu_mode, dtype, tolerance):
    module = random_module(task, family, dtype)
    spec = module.spec
    g = torch.Generator().manual_seed(2)
    nodes = relu_nodes(spec) if relu_mode == "dummy_2nd" else []
    masks = {k: v.to(dtype) for k, v in draw_relu_masks(spec, nodes, 4, g, p_ones=0.5).items()}
    G = (torch.rand((4, *output_shape(spec)), generator=g) * 2 - 1).to(dtype)
    d_prime = pseudo_backward(module, G, masks)
    x = torch.rand(4, *spec.input_shape, generator=g).to(dtype)
    assert relative_error(d_prime, surrogate_vjp(module, masks, G, x)) < tolerance
    assert d_prime.abs().sum() > 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_enlarged_g_on_the_fully_convolutional_classifier(family):
    classifier = random_module(CLASSIFICATION, family)
    conv = fully_convolutional_module(classifier)
    x = torch.rand(2, *classifier.spec.input_shape, dtype=torch.float64)
    assert torch.allclose(classifier(x), conv(x).flatten(1))  # same function at the native size
    shape = enlarged_input_shape(conv.spec, 7)
    assert output_shape(conv.spec, shape) == (1, 7, 7)
    g = torch.Generator().manual_seed(3)
    masks = {k: v.double() for k, v in
             draw_relu_masks(conv.spec, relu_nodes(conv.spec)[:1], 2, g, share_channels=True, input_shape=shape).items()}
    assert next(iter(masks.values())).shape[1] == 1  # one 2-D x' repeated over channels
    G = torch.rand((2, 1, 7, 7), generator=g, dtype=torch.float64) * 2 - 1
    d_prime = pseudo_backward(conv, G, masks, input_shape=shape)
    reference = surrogate_vjp(conv, masks, G, torch.rand(2, *shape, dtype=torch.float64))
    assert d_prime.shape == (2, *shape)
    assert relative_error(d_prime, reference) < 1e-10


@pytest.mark.parametrize("task", [CLASSIFICATION, SEGMENTATION])
def test_d_prime_does_not_change_with_the_input_images_but_real_gradients_do(task):
    module = random_module(task, "vgg-d4")
    spec = module.spec
    g = torch.Generator().manual_seed(4)
    masks = {k: v.double() for k, v in draw_relu_masks(spec, relu_nodes(spec), 1, g).items()}
    G = torch.rand((1, *output_shape(spec)), generator=g, dtype=torch.float64) * 2 - 1
    images = [torch.rand(1, *spec.input_shape, generator=g, dtype=torch.float64) * s for s in (1.0, 5.0, 0.1)]
    pseudo = [surrogate_vjp(module, masks, G, x) for x in images]
    for other in pseudo[1:]:
        assert relative_error(other, pseudo[0]) < 1e-10
    real = []
    for x in images:
        x = (x - 0.5).requires_grad_(True)  # mixed signs so ReLU masks differ between images
        grad, = torch.autograd.grad(module(x), x, G)
        real.append(grad)
    assert relative_error(real[1], real[0]) > 1e-3
