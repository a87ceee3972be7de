"""The GPU path: each predictor picks CUDA by itself and predicts there, as on the CPU."""

from __future__ import annotations

import pytest
import torch

from config.serve_config import load_app_config
from inference import Classification, Detection, build_predictor
from inference.images import decode_image
from training.render import render_jpeg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SPECS = load_app_config().registry.models


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_model_runs_on_cuda_and_agrees_with_the_cpu(spec):
    image = decode_image(render_jpeg(1)[0])
    gpu = build_predictor(spec)
    assert gpu.device == "cuda"
    assert next(gpu.model.parameters()).is_cuda  # type: ignore[attr-defined]
    (on_gpu,) = gpu.predict([image])
    (on_cpu,) = build_predictor(spec, device="cpu").predict([image])
    if isinstance(on_cpu, Detection):
        assert isinstance(on_gpu, Detection)
        assert on_cpu.primitives, "the rendered scene has primitives: the CPU finds some"
        assert [p.primitive_class for p in on_gpu.primitives] == [
            p.primitive_class for p in on_cpu.primitives
        ]
        for g, c in zip(on_gpu.primitives, on_cpu.primitives, strict=True):
            assert (g.x, g.y, g.probability) == pytest.approx((c.x, c.y, c.probability), abs=0.02)
    else:
        assert isinstance(on_cpu, Classification) and isinstance(on_gpu, Classification)
        assert on_gpu.image_class == on_cpu.image_class
        assert on_gpu.probability == pytest.approx(on_cpu.probability, abs=0.02)
