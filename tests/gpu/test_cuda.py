"""The GPU path: each model deployment picks CUDA by itself and predicts there."""

from __future__ import annotations

import pytest
import torch

from config.registry import DEFAULT_MODELS
from deployments.inference import decode_image
from training.evaluate import load_model
from training.render import render_jpeg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("spec", DEFAULT_MODELS, ids=lambda s: s.name)
def test_model_runs_on_cuda(spec):
    model = load_model(spec)
    assert model.device == "cuda"
    assert next(model.model.parameters()).is_cuda
    out = model._predict([decode_image(render_jpeg(1)[0])])
    assert len(out) == 1
