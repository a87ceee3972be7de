"""Model code and the queue's logic run with Ray absent: every training module, the
predictors and the taskqueue package import with ``import ray`` made to fail; the predictors
load the shipped weights and predict."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from config.settings import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys

    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"ray is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, NoRay())
    import training
    for module in pkgutil.iter_modules(training.__path__):
        importlib.import_module(f"training.{module.name}")
    import inference, inference.images, inference.processing, inference.predictors
    import taskqueue, taskqueue.dispatcher, taskqueue.retention  # the queue's logic
    from config.serve_config import load_app_config
    from inference import Classification, Detection, build_predictor
    from inference.images import decode_image
    from training.render import PRIMITIVE_CLASSES, SCENE_CLASSES, render_jpeg

    data, sample = render_jpeg(11)
    image = decode_image(data)
    drawn = {PRIMITIVE_CLASSES[b.class_id] for b in sample.boxes}
    for spec in load_app_config().registry.models:
        (answer,) = build_predictor(spec, device="cpu").predict([image])
        if isinstance(answer, Detection):
            found = {p.primitive_class for p in answer.primitives}
            assert found & drawn, (spec.name, found, drawn)
        else:
            assert isinstance(answer, Classification)
            assert answer.image_class == SCENE_CLASSES[sample.scene], (spec.name, answer)
        print(spec.name, "ok")
    assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules)
""")


def test_training_and_predictors_need_no_ray():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split() == ["YOLO", "ok", "SSD", "ok", "model_v1", "ok"]
