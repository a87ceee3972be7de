"""Write weights/README.md (the model cards) from weights/metrics.json and the training
history (weights/training-log.json).

The ``baseline`` section of the metrics (the previous round's weights, evaluated by the same
command on the same images) is the "before" column; the targets are issue 21's. Each card
ends with the model's training history: every run with where it ran, and its validation
curve (``weights/curve-<model>.png``).

Usage: ``python -m training.model_card`` after ``make evaluate``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from training.datagen import PLAN

# Issue 21's bounds: CPU cost against the round before (measured in the same run).
COST_BOUND = 1.3
BASELINE_MS = {"YOLO": 51.9, "SSD": 66.9, "model_v1": 16.1}
BEFORE, SHIPPED = "round 2 (before)", "round 3 (shipped)"
CLASS_FLOOR = 0.70  # no class below this on the randomized and ray-caster splits (YOLO)

CARDS: dict[str, dict[str, Any]] = {
    "YOLO": {
        "what": "Ultralytics YOLOv8n-OBB (oriented boxes) at 288x288 (256x256 until round 3's "
        "eighth sitting), first trained from "
        "scratch (no downloaded weights) on the original renderer, then fine-tuned on "
        "the mixed data set.",
        "commands": [
            "python -m training.train_yolo --epochs 20 --fraction 0.67   # the original "
            "data set: renderer A only (git history, weights before issue 10)",
            "python -m training.train_yolo --model weights/yolo_obb.pt --name yolo_ft "
            "--epochs 5 --close-mosaic 2 --fraction 0.67",
            "python -m training.train_yolo --model weights/yolo_obb.pt --name yolo_mixed "
            "--epochs 4 --close-mosaic 1   # round 2: the mixed data set (make data)",
            "make train   # round 3 on: one sitting from the shipped weights (history below)",
        ],
        "targets": {"own": 0.935, "randomized": 0.80, "other_renderer": 0.80},
        "notes": "Predicts rotated boxes: `rotation` is meaningful. mAP uses exact rotated "
        "IoU (polygon intersection), stricter than ultralytics' own probIoU-based "
        "validation figure (the training curve's). Where it fails on the ray-caster's "
        "scenes, class by class, and what this round did about it: "
        "[docs/failures.md](../docs/failures.md).\n\n"
        "Round 3's third sitting drew randomized scenes twice per epoch (the split furthest "
        "from its target): mAP rose on every split, while confident false detections on "
        "distractor scenes rose from 0.233 (second sitting) to 0.300 per scene. The fourth "
        "drew the distractor scenes three times per epoch instead of twice (8.3 % of the "
        "epoch, was 5.7 %): they fell to 0.207 per scene (target 0.10) while mAP rose again on "
        "every split and every ray-caster class reached the 0.70 floor. Same network, same "
        "cost (CPU ms 1.02x round 2's in one run). The curve still rose 0.835 → 0.845 in the "
        "last epoch: not converged. A fifth sitting (randomized scenes 2.5 times per epoch, "
        "distractors 4, the first on both CPU cores) raised validation mAP to 0.853 but "
        "scored lower on the three target splits (ray-caster 0.768, randomized 0.689, 0.287 "
        "false detections per distractor scene): not shipped; the validation split no longer "
        "tracks the targets (docs/failures.md). The sixth (1.4 h from the fourth's weights, "
        "AdamW at 5e-4, the fourth's mix, its best epoch picked on the validation images of "
        "the target sources; 21 epochs at ~4 min) rose on every split: ray-caster 0.773 → "
        "0.795 with every class over 0.70, randomized 0.694 → 0.721 (cone 0.694 and pyramid "
        "0.602 under the floor), own 0.968 → 0.971. It is also surer of its mistakes: 0.287 "
        "false detections per distractor scene (was 0.207) and a cone at 0.503 on "
        "grace_hopper.jpg (0.143 per photograph, target 0.10). Its curve went 0.753 → 0.783 "
        "→ 0.796 → 0.802 (epochs 1, 10, 15, 21), flattening as the learning rate decayed: "
        "more sittings still pay, at a lower rate. A seventh sitting (1.2 h, the sixth's "
        "recipe with hard negatives: 1 500 distractor scenes once each instead of 300 three "
        "times, and the 685 training images without primitives the shipped weights fired on "
        "drawn once more, `training.mine`) lowered the false detections per distractor scene "
        "0.287 → 0.253 but cost both target splits (ray-caster 0.784, randomized 0.712; "
        "validation 0.770 → 0.798 over 4.2 epochs): not shipped (docs/failures.md).\n\n"
        "The eighth sitting (shipped) took the lever that met SSD's target, the input size. "
        "The sixth's weights alone, served at 288 and 320 instead of 256 (same commands, "
        "same images): ray-caster 0.795 → 0.823 / 0.827, randomized 0.721 → 0.749 / 0.751, "
        "own 0.971 → 0.979 / 0.980, false detections per distractor scene 0.287 → 0.353 / "
        "0.380, per photograph 0.143 → 0 / 0.286; CPU ms per image 1.15-1.23 × (288) and "
        "1.34-1.53 × (320) the 256-pixel cost in pairs: 320 is past the 1.3 × bound, 288 "
        "inside it. So YOLO is served and trained at 288 (`image_size: 288`; `train_yolo` "
        "follows the served size), and the sitting was `make train`'s YOLO line at 288 from "
        "the sixth's weights: 1.2 h, 8 epochs of 11 100 images (the 1 200 distractor scenes "
        "once each, no mined images: the mix YOLO had not had), validation 0.788 → 0.805 "
        "(epoch 3) → 0.815 (6) → 0.813 (8), the last epoch shipped. Against the sixth at "
        "256: ray-caster 0.795 → 0.817 (every class ≥ 0.76: sphere 0.907, cube 0.794, "
        "cylinder 0.852, cone 0.770, pyramid 0.762), randomized 0.721 → 0.752 (cone 0.694 → "
        "0.734; pyramid 0.602 → 0.666 is the one class under the floor), own 0.971 → 0.979, "
        "false detections per photograph 0.143 → 0 (target met), per distractor scene 0.287 "
        "→ 0.293. Against the sixth's weights at 288 untrained, the sitting traded 0.006 on "
        "the ray-caster split for 0.353 → 0.293 false detections per distractor scene. Cost "
        "0.92-1.27 × round 2's per image in three pairs in one run (stored 17.5 against "
        "19.4 ms), inside the 1.3 × bound. The curve flattened at ~0.81 on the validation "
        "images within the sitting: the randomized target (0.80, pyramid 0.70) and the false "
        "boxes are not a few more epochs of this recipe away.\n\n"
        "The ninth sitting (shipped) is a data change. Of the eighth's 44 false boxes ≥ 0.5 "
        "on the 150 held-out distractor scenes, 27 sit on a prism (the distractor covering "
        "most of the box, re-rendered from the scene's seed): a triangular prism taken for a "
        "pyramid 13 times, a pentagonal one for a cube 9; prisms were one distractor kind in "
        "eight. A new source, `prisms` (1 500 training scenes whose distractors are all "
        "prisms, beside primitives drawn 35 % pyramids and 35 % cubes), drawn once per epoch "
        "on top of `make train`'s YOLO line, from the eighth's weights at 288 (1.15 h, 12 "
        "epochs of 12 600 images, ~5.5 min each on a faster day): validation 0.778 → 0.815 "
        "(epoch 4) → 0.823 (8) → 0.835 (10) → 0.832 (12; the eighth peaked at 0.815), the "
        "last epoch shipped. Against the eighth: ray-caster 0.817 → 0.832 (sphere 0.919, "
        "cube 0.806, cylinder 0.841, cone 0.793, pyramid 0.800), randomized 0.752 → 0.769 "
        "(cube 0.710 → 0.766; pyramid 0.666 → 0.655, still the one class under the floor), "
        "own 0.979 → 0.979, false detections per distractor scene 0.293 → 0.253, per "
        "photograph 0 → 0. The prism boxes fell 27 → 24 (pentagonal prisms as cubes 9 → 6), "
        "the triangular prism is still a pyramid 13 times: the two share the outline and "
        "the shading of a lit triangular face. Cost 1.09-1.14 × round 2's per image in "
        "three pairs in one run (stored 11.2 against 9.9 ms), inside the 1.3 × bound.\n\n"
        "The tenth sitting (shipped) is a data change too. The ninth's misses on the "
        "randomized split were small, dark or low-contrast pyramids (53 % found under 1 % of "
        "the image, 65 % of all). A new source, `small_pyramids` (1 500 training scenes of up "
        "to ten objects 4-30 % of the shorter side, half the primitives pyramids and a fifth "
        "cubes), drawn once per epoch beside the ninth's mix, from the ninth's weights at 288 "
        "(1.1 h; this machine ran at less than half the ninth's speed, so 5 epochs of 14 100 "
        "images, the last cut at a third): validation 0.802 → 0.812 → 0.820 → 0.819 → 0.830 "
        "(the ninth ended at 0.832), still rising. Against the ninth: randomized pyramid "
        "0.655 → 0.706, so no class is under the 0.70 floor on either split (randomized cone "
        "0.748 → 0.733 the lowest: cones are taken for pyramids 13 → 16 times on the "
        "randomized sheet), randomized 0.769 → 0.775, ray-caster 0.832 → 0.820 (sphere 0.892, "
        "cube 0.800, cylinder 0.828, cone 0.770, pyramid 0.811), own 0.979 → 0.980, false "
        "detections per distractor scene 0.253 → 0.267 (38 → 40 boxes), per photograph 0 → "
        "0. Shipped for the class floor the ninth missed, the ray-caster split still over "
        "0.80. Cost 1.09-1.13 × round 2's per image in three pairs in one run (stored 28.2 "
        "against 25.0 ms on a slow day), inside the 1.3 × bound.\n\n"
        "An eleventh sitting (not shipped) ran the tenth's mix from its weights at a lower "
        "peak rate (AdamW 3e-4, 1.1 h: 6 epochs of 14 100 images, ~11 min each): validation "
        "0.821 → 0.828 → 0.828 → 0.832 → 0.832 → 0.839, the highest of the round, rising "
        "most in the last epoch without mosaic. Against the tenth: ray-caster 0.820 → 0.827 "
        "(sphere 0.915, cube 0.804, cylinder 0.821, cone 0.789, pyramid 0.803), randomized "
        "0.775 → 0.784 (cylinder 0.761 → 0.793, cone 0.733 → 0.751) but randomized pyramid "
        "0.706 → 0.690, under the class floor again; own 0.980 → 0.978; false detections "
        "per distractor scene 0.267 → 0.267 (40 boxes), per photograph 0. Not shipped: it "
        "gives back the floor the tenth met for 0.007-0.009 on each split, and neither "
        "meets 0.80 on the randomized split. More epochs of the mix still pay, about +0.01 "
        "on each split an hour on this machine.\n\n"
        "The twelfth sitting (shipped) went on from the eleventh's weights with the "
        "small-pyramid scenes drawn twice (`make train`'s mix since) at 2e-4 (0.45 h: 2 "
        "epochs of 15 600 images, the third cut by the clock at a ninth): validation 0.831 "
        "→ 0.829 → 0.837. "
        "Against the tenth (shipped before): randomized 0.775 → 0.789 (sphere 0.909, cube "
        "0.795, cylinder 0.775, cone 0.733 → 0.764, pyramid 0.704), ray-caster 0.820 → 0.817 "
        "(sphere 0.909, cube 0.789, cylinder 0.827, cone 0.773, pyramid 0.789), so every "
        "class ≥ 0.70 on both splits; own 0.980 → 0.977; false detections per distractor "
        "scene 0.267 → 0.240 (40 → 36 boxes), per photograph 0. Over the two sittings, 1.55 h: "
        "the randomized split rose 0.014 and the ray-caster split held, with the validation "
        "curve at its highest (0.837-0.839) and flattening; the randomized target (0.80) is "
        "0.011 away. Cost 0.96-1.13 × round 2's per image in three pairs in one run (stored "
        "20.6 against 18.2 ms), inside the 1.3 × bound.\n\n"
        "Served since with non-maximum suppression at IoU 0.7 (ultralytics' default and what "
        "its training validates at), not 0.5: at 0.5 a box suppressed a touching or "
        "overlapping object's box of the same class. The twelfth's weights, same images: "
        "randomized 0.789 → 0.797 (sphere 0.920, cube 0.800, cylinder 0.790, cone 0.766, "
        "pyramid 0.708), ray-caster 0.817 → 0.822, own 0.977, false detections per distractor "
        "scene 0.240 and per photograph 0 unchanged (at 0.4 / 0.6 / 0.75 / 0.8: randomized "
        "0.787 / 0.792 / 0.797 / 0.797, and at 0.8 one more false box). A thirteenth sitting "
        "(not shipped) ran `make train`'s mix from the twelfth's weights at 2e-4 (1.1 h, 7 "
        "epochs of 15 600 images, the last cut by the clock): validation 0.831 → 0.833 → "
        "0.843 → 0.841 → 0.842 → 0.844 → 0.842, its best epoch (the sixth) kept. At IoU 0.7 "
        "against the twelfth: ray-caster 0.822 → 0.838 (every class ≥ 0.80: sphere 0.921, "
        "cube 0.820, cylinder 0.827, cone 0.814, pyramid 0.808), but randomized 0.797 → 0.793 "
        "(cone 0.766 → 0.746) and false detections per distractor scene 0.240 → 0.287 (36 → "
        "43 boxes; cubes 8 → 14). Not shipped: it is worse on both targets still missed. The "
        "validation curve peaked at 0.837-0.844 in each of three sittings (2.65 h): more epochs of "
        "this mix move the ray-caster split, not the randomized one or the false boxes. Cost "
        "of the twelfth at IoU 0.7: 1.09-1.13 × round 2's per image in three pairs in one run "
        "(stored 15.6 against 14.3 ms), inside the 1.3 × bound.\n\n"
        "A fourteenth sitting (not shipped) added a source aimed at the false boxes: "
        "`lookalikes` (1 500 scenes) sets prisms, capsules, ellipsoids, tori and flat "
        "outlines (triangles, quadrilaterals, ellipses lit evenly) beside cubes, pyramids and "
        "cones, or alone; the shipped weights' false boxes on the held-out distractor scenes "
        "sit nearly all on those things (docs/failures.md). `make train`'s mix plus these "
        "scenes twice, from the twelfth's weights at 2e-4 (1.2 h: 6 epochs of 18 600 images, "
        "the sixth cut by the clock): validation 0.832 → 0.834 → 0.836 → 0.841 → 0.842 → "
        "0.843, the sixth kept. Against the twelfth at IoU 0.7: ray-caster 0.822 → 0.833 "
        "(cube 0.819, cone 0.800), false detections per distractor scene 0.240 → 0.213 (36 "
        "→ 32 boxes), own 0.977 → 0.981, per photograph 0, but randomized 0.797 → 0.785 "
        "(cone 0.744, pyramid 0.692, under its class floor). Not shipped. Over the four "
        "sittings since the tenth (3.85 h) the validation curve peaked at 0.837-0.844 each "
        "time and the randomized split stayed within 0.784-0.797 whatever the mix: the "
        "randomized target (0.80) and the distractor target (0.10) are not reached by more "
        "epochs on these renderers; what is left there is nearly invisible pyramids and "
        "pyramids and cones taken for each other.\n\n"
        "A fifteenth sitting (not shipped) drew the lookalike scenes once and the randomized "
        "scenes three times (`raycast=2 randomized=3 distractors=1 classic=0.3 "
        "photo_recoloured=0.25 photo_on_scene=0.25 small_pyramids=2 lookalikes=1`), from the "
        "twelfth's weights at 2e-4 (1 h: 5 epochs of 19 300 images, the fifth cut by the "
        "clock): validation 0.828 → 0.836 → 0.838 → 0.839 → 0.841, the fifth kept. Against "
        "the twelfth at IoU 0.7: ray-caster 0.822 → 0.840 (cone 0.775 → 0.822, pyramid "
        "0.792 → 0.809), own 0.977 → 0.977, per photograph 0, but randomized 0.797 → 0.793 "
        "(cone 0.766 → 0.747) and false detections per distractor scene 0.240 → 0.273 (36 → "
        "41 boxes). Five sittings since the tenth (4.85 h): the same plateau.\n\n"
        "A sixteenth sitting (not shipped) asked whether that plateau is the same 2 200 "
        "randomized scenes learned by heart: the data set was grown to 6 600 of them (2 400 "
        "distractor and 3 000 lookalike scenes, twice as many; put back since neither this "
        "sitting nor SSD's fourteenth shipped), each drawn once "
        "(`raycast=2 randomized=1 distractors=1 classic=0.3 photo_recoloured=0.25 "
        "photo_on_scene=0.25 small_pyramids=2 lookalikes=1`), from the twelfth's weights at "
        "2e-4 (0.9 h: 4 epochs of 22 000 images): validation 0.830 → 0.836 → 0.834 → 0.840, "
        "the fourth kept. Against the twelfth at IoU 0.7: ray-caster 0.822 → 0.831, false "
        "detections per distractor scene 0.240 → 0.213 (36 → 32 boxes), own 0.977, per "
        "photograph 0, but randomized 0.797 → 0.792 (pyramid 0.704, cone 0.750). Not "
        "shipped. Three times the distinct scenes leave the randomized split where the same "
        "scenes drawn two or three times left it: the plateau is not memorised scenes.\n\n"
        'Class balance (measured in docs/failures.md, "Class balance, measured"): the '
        "shipped mix draws pyramids most (29.7 % of the objects; spheres, cylinders and cones "
        "16 % each), and the class found least on the randomized split is the pyramid (0.708), "
        "while spheres and cones, drawn alike, are found best and second worst (0.920, 0.766): "
        "how often a class "
        "is drawn does not set how well it is found, and repeat-factor sampling would move the "
        "share of images showing a cone by under 2 points. No sitting was spent on it.",
    },
    "SSD": {
        "what": "torchvision SSDlite320 with a MobileNetV3-Large backbone (reduced tail), run "
        "at 320x320 (256x256 until round 3's ninth sitting), first trained from scratch on "
        "the original renderer, then fine-tuned on the mixed data set.",
        "commands": [
            "python -m training.train_ssd --epochs 7 --size 256   # renderer A only (before)",
            "python -m training.train_ssd --init weights/ssdlite.pt --run runs/ssd_mixed "
            "--epochs 2 --lr 1e-3   # round 2: the mixed data set",
            "make train   # round 3 on: one sitting from the shipped weights (history below)",
        ],
        "targets": {"own": 0.831, "other_renderer": 0.65},
        "notes": "SSD predicts axis-aligned boxes: the API reports `rotation` 0 for it, and its "
        "mAP is measured with axis-aligned IoU against the axis-aligned hulls of the "
        "oriented labels (what it is trained on).\n\n"
        "Round 3's first five sittings (two CPU cores, no GPU lent) went to YOLO, the "
        "furthest along toward its targets, and model_v1. SSD's first sitting of the round "
        "came with YOLO's sixth: 2 epochs from round 2's weights (`train_ssd --init "
        "weights/ssdlite.pt --epochs 2 --lr 1e-3`, ~6 min an epoch), validation mAP@0.5 "
        "0.479 → 0.544, the best epoch shipped. Ray-caster 0.291 → 0.404 (every class up, "
        "cylinder 0.173 → 0.322), randomized 0.309 → 0.342, own 0.831 → 0.857; false "
        "detections per distractor scene 0.493 → 0.553, per photograph level (0.286).\n\n"
        "The second sitting trained as YOLO does: the same source mix less the "
        "randomized scenes' double share (`SSD_MIX`: ray-caster twice, distractors three "
        "times, 8 600 images an epoch), its epoch picked on the ray-caster and randomized "
        "validation images (`SSD_VAL`; the shipped weights scored 0.377 on them), a one-cycle "
        "sitting of 5 epochs peaking at 2e-3 (`SSD_LR`; ~14 min an epoch on this machine). "
        "The higher rate cost the first epoch (0.263), then the curve climbed 0.352 → 0.404 "
        "→ 0.484 → 0.507 as the rate fell. Ray-caster 0.404 → 0.578 (cylinder 0.322 → 0.542, "
        "cone 0.319 → 0.500), randomized 0.342 → 0.415, own 0.857 → 0.878; false detections "
        "per photograph 0.286 → 0.143 (a sphere on coffee.png, 0.989), per distractor scene "
        "0.553 → 0.540. Same network, same cost (26.8 ms against round 2's 26.1, one run). "
        "Still under the 0.65 target: the last epoch added 0.023 with the rate near its "
        "floor.\n\n"
        "A third sitting from these weights (2 epochs, one cycle peaking at 1e-3, same mix "
        "and validation; 0.461 → 0.519 on the validation images) was not shipped: ray-caster "
        "0.578 → 0.592, randomized 0.415 → 0.423, own 0.878 → 0.880, but 5 false detections "
        "≥ 0.5 on the 7 photographs (0.143 → 0.714 per photograph: a sphere and a pyramid on "
        "camera.png, two spheres on coffee.png, a cube on china.jpg) and 0.560 per distractor "
        "scene. The next SSD lever is the false boxes (harder negatives), then small objects "
        "(docs/failures.md).\n\n"
        "The fourth sitting drew its hard negatives: the 911 of 1 750 training images without "
        "primitives the second sitting's weights found one in (`training.mine --model SSD`) "
        "twice more (`mined=2`, 10 422 images an epoch; 3 epochs, one cycle at 1e-3, ~12 min "
        "an epoch): validation 0.466 → 0.506 → 0.517, ray-caster 0.610, but false detections "
        "0.571 per photograph and 0.573 per distractor scene, and its weights found a "
        "primitive in more of those training images than before (1 070). The reason: "
        "torchvision's SSD loss classifies three background anchors per foreground anchor of "
        "the same image, so an image without a primitive adds nothing, and no sitting had "
        "learned from a distractor scene or a photograph. `train_ssd` now adds their hardest "
        "anchors' background loss (`learn_background`). The fifth sitting (shipped) ran with "
        "it from the fourth's weights (2 epochs, one cycle at 1e-3, the fourth's 1 070 mined "
        "images twice more; validation 0.489 → 0.519): against the second sitting, ray-caster "
        "0.578 → 0.616 (cylinder 0.542 → 0.634, cylinders taken for cubes 11 → 3), "
        "randomized 0.415 → 0.454, own 0.878 → 0.894, false detections per distractor scene "
        "0.540 → 0.273, but per photograph 0.143 → 0.429 (two spheres on coffee.png, one at "
        "0.97 as before, and one on camera.png). Same network, same cost (28.2 ms against "
        "round 2's 27.6, one run). The first epoch, at the cycle's peak, had made 0.213 per "
        "distractor scene and 0.143 per photograph at 0.566 on the ray-caster split: more "
        "sittings with the background learned should lower both again.\n\n"
        "A sixth sitting from the shipped weights (`make train`'s recipe: mined first, 106 "
        "of the 1 750 negative training images now fire ≥ 0.25, against 1 070 before the "
        "fifth; 3 epochs, one cycle at 1e-3, ~17 min an epoch) was not shipped. Its "
        "validation curve flattened (0.466 → 0.533 → 0.539; the fifth ended at 0.519) and "
        "the last epoch gained little: ray-caster 0.616 → 0.625, randomized 0.454 → 0.469, "
        "own 0.894 → 0.901, false detections per photograph 0.429 → 0.286 (two on "
        "coffee.png), but per distractor scene 0.273 → 0.353 (41 → 53 boxes on the 150 "
        "held-out scenes). It learned the 300 distractor scenes it trains on, not "
        "distractors: a box ≥ 0.5 on 29 → 10 of those 300, and on 36 → 45 of the 150 "
        "held-out ones. More sittings of this recipe approach ~0.63, short of 0.65; the "
        "levers left are more distractor scenes (not the same 300 drawn more often) and "
        "the small objects (anchors, input size; docs/failures.md).\n\n"
        "The seventh sitting (shipped) took that lever: the data set renders 1 200 "
        "distractor scenes for training (was 300; the first 300 unchanged), drawn once an "
        "epoch (`distractors=1`) instead of 300 three times. Mining with the fifth's weights "
        "found a primitive ≥ 0.25 on 80 of the 300 old scenes but 408 of the 900 new ones "
        "(514 of 2 650 negative images, drawn twice more). Same recipe otherwise (3 epochs, "
        "one cycle at 1e-3, 9 928 images and ~14.5 min an epoch): validation 0.467 → 0.525 "
        "→ 0.545. Against the fifth: ray-caster 0.616 → 0.627 (sphere 0.667 → 0.695, cone "
        "0.538 → 0.556), randomized 0.454 → 0.465, own 0.894 → 0.903, false detections per "
        "distractor scene 0.273 → 0.173 (a box ≥ 0.5 on 36 → 23 of the 150 held-out "
        "scenes), per photograph 0.429 → 0.143 (coffee.png's cup). Same network, same cost "
        "(36.1 ms against round 2's 36.3, one run). Still under 0.65 and over 0.10 false "
        "boxes.\n\n"
        "An eighth sitting from the seventh's weights (mined again: 239 of 2 650; 2 epochs, "
        "one cycle at 1e-3; validation 0.504 → 0.543) was not shipped: ray-caster 0.614, "
        "randomized 0.468, own 0.899, false detections 0.220 per distractor scene and 0.429 "
        "per photograph; averaged with the seventh's weights 0.623 at 0.213. The recipe has "
        "flattened at about 0.63; the lever left for 0.65 is the small objects (anchors, "
        "input size; docs/failures.md).\n\n"
        "The ninth sitting (shipped) took the input size: SSD is served and trained at 320 "
        "(`image_size: 320`, was 256; `train_ssd --size` follows the served size and "
        "validates at it). From the seventh's weights, mined again (239 of 2 650), 2 epochs "
        "at 320, one cycle at 1e-3 (~24.5 min an epoch): validation 0.527 → 0.574; then one "
        "more epoch from its second at 5e-4 with the distractor scenes drawn twice "
        "(validation 0.574). Against the seventh: ray-caster 0.627 → 0.662 (sphere 0.695 → "
        "0.704, cube 0.657 → 0.687, cylinder 0.636 → 0.665, cone 0.556 → 0.628, pyramid "
        "0.589 → 0.627), randomized 0.465 → 0.492, own 0.903 → 0.921; false detections per "
        "distractor scene 0.173 → 0.193 (26 → 29 boxes on 150 scenes), per photograph 0.143 "
        "→ 0.286 (camera.png besides coffee.png's cup). The false-box figure fell with the "
        "rate in each sitting at 320 (0.427 → 0.233 → 0.193). Cost 1.02-1.15 × round 2's "
        "per image in pairs in one run (stored 23.5 against 22.4 ms), inside the 1.3 × bound: "
        "the larger input pays for itself with the ray-caster target met.\n\n"
        "A tenth sitting with the prism scenes YOLO's ninth shipped with (15 of SSD's 28 "
        "false boxes on distractor scenes sit on prisms): mined again (249 of 2 650), one "
        "epoch of `make train`'s SSD line at half its rate (5e-4; 10 898 images, ~20 min), "
        "validation 0.574 → 0.586. Not shipped: ray-caster 0.662 → 0.656, randomized 0.492 "
        "→ 0.497, own 0.921 → 0.921, false detections per distractor scene 0.193 → 0.193 "
        "(on prisms 15 → 15), per photograph 0.286 → 0.143 (camera.png's pyramid gone, "
        "coffee.png's cup still a sphere at 0.987): one epoch did not move the boxes the "
        "scenes are for.\n\n"
        "The eleventh sitting (shipped) drew the lookalike scenes once (1 500: prisms, "
        "capsules, ellipsoids, tori and flat outlines beside cubes, pyramids and cones, or "
        "alone; training/sources.py) beside `make train`'s SSD line: mined again (249 of 2 "
        "650), one epoch from the ninth's weights at 1e-3 (13 898 images, ~26 min), "
        "validation 0.574 → 0.589. Against the ninth: false detections per distractor scene "
        "0.193 → 0.160 (29 → 24 boxes), per photograph 0.286 → 0.143 (camera.png's pyramid "
        "gone, coffee.png's cup still a sphere at 0.982), randomized 0.492 → 0.505, own "
        "0.921 → 0.926, ray-caster 0.662 → 0.657 (still over its 0.65 target; pyramid 0.627 → "
        "0.641, cube 0.687 → 0.674). Shipped: both false-box figures fall and every target "
        "met before is still met. The same network and input as the ninth: in pairs in one "
        "run 1.03-1.04 × the ninth's weights per image, 1.18-1.20 × round 2's (stored 28.2 "
        "against 23.9 ms), inside the 1.3 × bound.\n\n"
        "The twelfth sitting (shipped) went on from the eleventh's weights with the "
        "lookalike scenes drawn twice (`lookalikes=2`): mined again (293 of 2 650), one "
        "epoch at 1e-3 (15 486 images, ~27 min), validation 0.589 → 0.598. Against the "
        "eleventh: ray-caster 0.657 → 0.665 (sphere 0.692 → 0.710, cylinder 0.652 → 0.673), "
        "randomized 0.505 → 0.524, own 0.926 → 0.933, false detections per distractor scene "
        "0.160 → 0.127 (24 → 19 boxes: pyramids 10, cubes 5, spheres 3, cylinders 1), per "
        "photograph 0.143 → 0.143 (coffee.png's cup a sphere at 0.771, was 0.982). Every "
        "figure but the photographs' moves the right way; both false-box figures are still "
        "over 0.10. Same network and input: in pairs in one run 0.93-0.95 × the eleventh's "
        "weights per image (noise), 1.12-1.23 × round 2's (stored 19.8 against 17.6 ms, both "
        "re-measured in that run on a quieter machine), inside the 1.3 × bound.\n\n"
        "A thirteenth sitting (not shipped) ran the same recipe from the twelfth's weights "
        "(mined again: 249 of 2 650; one epoch at 1e-3, 15 398 images, ~29 min): validation "
        "0.598 → 0.611, randomized 0.524 → 0.532, but ray-caster 0.665 → 0.660 (pyramid "
        "0.639 → 0.615), own 0.933 → 0.930, false detections per distractor scene 0.127 → "
        "0.153 (19 → 23 boxes; pyramids 14), per photograph 0.143 (the cup). The false-box "
        "curve of the lookalike sittings (0.193 → 0.160 → 0.127) turned back up at its third: "
        "a further epoch at the same peak rate does not lead to 0.10.\n\n"
        "A fourteenth sitting (not shipped) ran on the data set grown for YOLO's sixteenth "
        "(6 600 randomized, 2 400 distractor, 3 000 lookalike scenes, each drawn once) from "
        "the twelfth's weights at half the peak rate (mined again: 537 of 3 850; one epoch "
        "at 5e-4, 21 574 images, ~39 min): validation 0.598 → 0.621, randomized 0.524 → "
        "0.551, own 0.933 → 0.942, but ray-caster 0.665 → 0.659 and false detections per "
        "distractor scene 0.127 → 0.153 (19 → 23 boxes; pyramids 12), per photograph 0.143 "
        "(the cup at 0.948). The distinct scenes help SSD on the randomized split, not on "
        "its false boxes.",
    },
    "model_v1": {
        "what": "torchvision MobileNetV3-Small scene classifier at 160x160, trained from "
        "scratch on renderer A's six scene backgrounds, then fine-tuned on the mixed "
        "data set with outlier exposure (images without a scene class learn a uniform "
        "answer), then temperature-scaled on the validation split.",
        "commands": [
            "python -m training.train_classifier --epochs 8   # renderer A only (before)",
            "python -m training.train_classifier --init weights/scene_classifier.pt "
            "--run runs/classifier_mixed --epochs 3 --lr 1e-3   # round 2: the mixed data set",
            "make train   # round 3 on: one sitting from the shipped weights (history below)",
            "python -m training.calibrate --model model_v1   # temperature and threshold "
            "for serve_config.yaml",
        ],
        "notes": "Six synthetic scene classes. On anything else (photographs, noise, rooms, "
        "the other renderer's scenes) it should answer `unknown`.\n\n"
        "**Why `grace_hopper.jpg` is a street** (round 3's investigation, `python -m "
        "training.evaluate` plus crops and masks of the photograph through the same "
        "predictor): its layout is a street's. The renderer's street is a blue sky over "
        "buildings with a grid of small lit windows, over a dark grey road (RGB about 70, 70, "
        "75) with white dashes at four fifths of the height; the portrait is a blue backdrop "
        "and a flag with a grid of white stars over a dark navy uniform with white ribbons "
        "at four fifths of the height. The answer is the whole frame's: either half alone "
        "answers uniformly (0.17 each), greying out any one sixteenth of the picture leaves "
        "street at ≥ 0.96, and greyscale, blur, a mirror image or 1.5 × the brightness all "
        "stay street. Round 2's negatives were whole-frame crops of 11 photographs, which "
        "the model tells from scenes by their texture; round 3 added photographs in front of "
        "scene backgrounds and photograph bands recoloured, some smoothed, to a scene's "
        "layout of colours (`photo_on_scene`, `photo_recoloured`). That made `china.jpg` "
        "(office 0.94) and `camera.png` (kitchen 0.41) unknown, 6 of 7 photographs, but not "
        "the portrait (three variants of the negatives tried; street 0.96 to 0.99 each). "
        "What is left: negatives that share a street's layout and a portrait's smooth "
        "surfaces need photographs of that kind, which this offline build does not have; "
        "answering from the agreement of crops would catch it (each half is uniform) at "
        "three times the cost, over the 1.3 × bound.\n\n"
        "Round 3's second sitting looked further. Covering part of the 160-pixel input "
        "with the photograph's mean colour: a 40-pixel square slid 20 pixels at a time "
        "leaves street at 0.40 or more (0.90 or more in most places), an 80-pixel one takes "
        "it down to 0.09 only where it covers the flag and the face; the photograph's "
        "nearest training images in the model's pooled "
        "features (cosine distance, 10th neighbour: 0.033, inside the 95th percentile of "
        "in-domain validation images, 0.041; the other six photographs 0.32 to 0.58) are "
        "all `randomized` streets whose middle is hidden by large objects, leaving a grid "
        "of lit windows above and the dark road below: the data teaches that those two "
        "cues are a street, and the portrait has both. No score on the logits separates "
        "it (maximum softmax 0.984, energy and maximum logit all at the in-domain median). "
        "Drawn portraits as negatives (600 training images: a head-and-shoulders figure "
        "with hair or a cap, a collar and badges, before walls, blurred photographs, "
        "stripes, rows of small marks or a flag in a corner; two versions, 3 epochs each "
        "from the shipped weights) were refused themselves and kept in-domain accuracy at "
        "1.0, but left the photograph a street (0.968): not shipped. Fixing it from the "
        "data side means teaching that a window grid and a dark lower band are not enough "
        "for a street, that is, fewer `randomized` streets whose street is mostly hidden, "
        "which changes in-domain accuracy and is for a sitting that can measure both.\n\n"
        "Round 3's third sitting measured it (`train_classifier --occluded-as-unknown "
        "FRACTION`: training scenes whose labelled objects cover that share of the frame "
        "learnt as none; 3 epochs from the shipped weights, judged with the shipped "
        "calibration). Heavily covered scenes are as common in every class of the "
        "`randomized` source (a fifth of each covered 0.4 or more), not only streets. "
        "At 0.5 (84 images) grace_hopper stays a street at 0.962; at 0.35 (309 images) at "
        "0.902, while accuracy on randomized test scenes falls 0.961 → 0.953 and their ECE "
        "rises 0.089 → 0.182: not shipped. The direction is right but the cost grows faster "
        "than the portrait moves.\n\n"
        "Round 3's fourteenth session tried a test that needs no new data: a feature-space "
        "density (Lee et al., 2018), class-conditional Gaussians with one shared, shrunk "
        "covariance (Ledoit-Wolf) fitted on 2 000-3 000 training scenes, the smallest "
        "Mahalanobis distance to a class as the score, which costs one matrix product per "
        "image. The portrait is in-distribution at every depth of this network: on the pooled "
        "(576) features it scores 20.5, between the in-domain validation images' 90th and "
        "99th percentiles (19.4, 27.3), on the penultimate (1 024) ones 16.9, under their "
        "90th (21.5); on the channel means and spreads of each of the 13 blocks it is at "
        "their 99th percentile at most (blocks 2-4: 12-14 against 11.3-13.5, where 1.5-3.5 % "
        "of the in-domain test scenes are over it too); summed over the blocks, 20.6 against "
        "21.8, and the threshold that would catch it (the 95th percentile) turns 19 % of the "
        "randomized test scenes `unknown`. Not shipped: the "
        "network represents the portrait as a street, so no test on its features separates "
        "them; what is left is another input (the crops above) or other data.\n\n"
        "Round 3's twenty-second session tried the crops' agreement at no cost: the head applied "
        "to the last feature map (5 × 5 at 160 pixels) pooled over its upper two rows and over "
        "its lower two, as well as over the whole, a scene answered only when both halves name "
        "it. On the shipped weights the portrait's upper half is a kitchen (0.62) and its lower "
        "half a street (0.99); but the halves of a third of the in-domain scenes disagree too "
        "(`unknown` on the classic test split 0.312, randomized 0.472): the head never learnt "
        "halves. Taught them (3 epochs from the shipped weights, the loss on both halves added "
        "at weight 1, a throwaway change to `train_classifier`), in-domain halves agree (no "
        "scene lost on the classic test split), and so does the portrait: street 0.99 whole, "
        "0.99 upper, 0.98 lower (randomized test scenes: 0.102 `unknown` with or without the "
        "rule). Not shipped: taught to find a street in the upper half of streets, the network "
        "finds one in the upper half of the portrait. Crops of the image itself are the test "
        "that is left, over the cost bound.",
    },
}


def _data_section() -> str:
    rows = ["| split | " + " | ".join(sorted({s for p in PLAN.values() for s in p})) + " |"]
    sources = sorted({s for p in PLAN.values() for s in p})
    rows.append("|---|" + "---|" * len(sources))
    for split, plan in PLAN.items():
        rows.append(f"| `{split}` | " + " | ".join(str(plan.get(s, "")) for s in sources) + " |")
    return "\n".join(
        [
            "All three models are fine-tuned on the mixed data set of `python -m training.datagen "
            "--out data/primitives` (`make data`, deterministic), whose sources are "
            "(`training/sources.py`):",
            "",
            "- `classic`: the original generator (`training/render.py`), six scene backgrounds;",
            "- `randomized`: the same renderer with domain randomization (`training/randomize.py`: "
            "textures on objects and surfaces, rooms in perspective with walls and corners, "
            "several coloured lights with highlights and cast shadows, field of view, camera roll "
            "and elevation, strong occlusion, objects cut by the border, sizes from 6 % to 80 % "
            "of the frame, motion blur, colour jitter, unlabelled distractors: tori, ellipsoids, "
            "capsules, prisms, blobs, text, lines, people-like silhouettes; empty scenes; a share "
            "over crops of the training photographs);",
            "- `raycast`: an independent ray-caster (`training/raycast.py`, no shared code): "
            "primitives standing on textured ground planes before textured walls, analytic "
            "intersections, 1-3 lights with ray-traced shadows, random field of view, elevation "
            "and roll;",
            "- `distractors`: randomized scenes with distractors only; `photo`: crops of the "
            "photographs set aside for training; `noise`: noise and colour fields; "
            "`photo_recoloured` (round 3): one to three crops of the training photographs in "
            "horizontal bands, each band given the colour statistics (Lab mean and spread) of "
            "the same band of a rendered scene: a scene's colours without its structure "
            "(no labels); `photo_on_scene` (round 3): a scene background with a large crop of "
            "a training photograph standing in front of it (no labels, no scene); `prisms` "
            "(round 3): randomized scenes whose distractors are all prisms (triangular, "
            "pentagonal) beside primitives drawn mostly as pyramids and cubes, the shapes "
            "the detectors took prisms for (docs/failures.md); `small_pyramids` (round 3): "
            "randomized scenes of up to ten objects 4-30 % of the shorter side (against "
            "6-80 %), half the primitives pyramids and a fifth cubes: YOLO's weakest class on "
            "randomized scenes, small ones worst (docs/failures.md).",
            "",
            "Images per split and source:",
            "",
            *rows,
            "",
            "`test` is exactly the original generator's held-out split (the same 400 images the "
            "weights before were measured on). Background-only photographs for evaluation are "
            "never trained on: `grace_hopper.jpg` (matplotlib), `zidane.jpg` and `bus.jpg` "
            "(ultralytics), `camera.png`, `chelsea.png`, `coffee.png` (scikit-image), `china.jpg` "
            "(scikit-learn). Photographs set aside for training: scikit-image's `astronaut`, "
            "`rocket`, `motorcycle_left`, `brick`, `grass`, `gravel`, `horse`, `page`, `text`, "
            "`ihc`, scikit-learn's `flower`.",
            "",
            "Figures below come from `make evaluate` (`python -m training.evaluate`), which runs "
            "the predictor classes the deployments serve (`inference/`) with the options in "
            '`serve_config.yaml`; the "before" column is the same command on the previous weights '
            "(`--section baseline --weights NAME=PATH`). CPU times: median of 50 single images on "
            "the 2-core build machine, both columns measured in one run.",
        ]
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _detector(name: str, m: dict, base: dict | None, card: dict) -> list[str]:
    targets = card["targets"]
    before = base or {}
    bound = before.get("cpu_ms_per_image_median_of_50", BASELINE_MS[name]) * COST_BOUND
    rows = [
        f"| | {BEFORE} | {SHIPPED} | target |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("own", "mAP@0.5, own held-out split (`test`)"),
        ("randomized", "mAP@0.5, randomized scenes"),
        ("other_renderer", "mAP@0.5, the other renderer (ray-caster)"),
    ):
        target = f"≥ {targets[key]:g}" if key in targets else ""
        rows.append(
            f"| {label} | {_fmt(before.get(key, {}).get('mAP50'))} | "
            f"**{_fmt(m.get(key, {}).get('mAP50'))}** | {target} |"
        )
    for key, label in (
        ("background_photos", "false detections ≥ 0.5 per photograph"),
        ("background_rendered", "false detections ≥ 0.5 per distractor scene"),
    ):
        rows.append(
            f"| {label} | {_fmt(before.get(key, {}).get('per_image'))} | "
            f"**{_fmt(m.get(key, {}).get('per_image'))}** | ≤ 0.10 |"
        )
    ms = "cpu_ms_per_image_median_of_50"
    rows.append(
        f"| CPU ms per image (batch 1) | {_fmt(before.get(ms), 1)} | "
        f"**{_fmt(m.get(ms), 1)}** | ≤ {bound:.1f} ({COST_BOUND} × before, same run) |"
    )
    out = rows + [
        "",
        "Per class, mAP@0.5 (before → shipped)"
        + (
            f"; target: no class below {CLASS_FLOOR:.2f} on randomized and ray-caster scenes:"
            if name == "YOLO"
            else ":"
        ),
        "",
    ]
    for key in ("own", "randomized", "other_renderer"):
        if key not in m:
            continue
        per = ", ".join(
            f"{c} {_fmt(before.get(key, {}).get('AP50_per_class', {}).get(c))} → {_fmt(v)}"
            for c, v in m[key]["AP50_per_class"].items()
        )
        out.append(f"- {key} ({m[key]['images']} images, {m[key]['objects']} objects): {per}")
    found = m.get("background_photos", {}).get("found", {})
    if found:
        out.append(
            "- detections ≥ 0.5 on each photograph: "
            + "; ".join(
                f"`{k}` {len(v)}" + (f" ({', '.join(f'{c} {p}' for c, p in v)})" if v else "")
                for k, v in found.items()
            )
        )
    return out


def _classifier(m: dict, base: dict | None) -> list[str]:
    before = base or {}
    ood, bood = m.get("out_of_domain", {}), before.get("out_of_domain", {})
    rows = [
        f"| | {BEFORE} | {SHIPPED}, calibrated | target |",
        "|---|---|---|---|",
        f"| accuracy, held-out split | {_fmt(before.get('accuracy'))} | "
        f"**{_fmt(m.get('accuracy'))}** | |",
        f"| expected calibration error (15 bins) | {_fmt(before.get('ece'))} | "
        f"**{_fmt(m.get('ece'))}** (uncalibrated {_fmt(m.get('ece_uncalibrated'))}) | ≤ 0.05 |",
        f"| `unknown` on in-domain images | — | {_fmt(m.get('unknown_rate_in_domain'))} | |",
        f"| `unknown` on photographs | {_fmt(bood.get('photos_unknown_rate'))} | "
        f"**{_fmt(ood.get('photos_unknown_rate'))}** | 1.000 |",
        f"| `unknown` on noise | {_fmt(bood.get('noise', {}).get('unknown_rate'))} | "
        f"{_fmt(ood.get('noise', {}).get('unknown_rate'))} | |",
        f"| `unknown` on the other renderer | "
        f"{_fmt(bood.get('other_renderer', {}).get('unknown_rate'))} | "
        f"{_fmt(ood.get('other_renderer', {}).get('unknown_rate'))} | |",
        f"| CPU ms per image (batch 1) | {_fmt(before.get('cpu_ms_per_image_median_of_50'), 1)} | "
        f"**{_fmt(m.get('cpu_ms_per_image_median_of_50'), 1)}** | "
        f"≤ {before.get('cpu_ms_per_image_median_of_50', BASELINE_MS['model_v1']) * COST_BOUND:.1f}"
        f" ({COST_BOUND} × before, same run) |",
        "",
        f"- Served with `temperature: {m.get('temperature')}` and `unknown_threshold: "
        f"{m.get('unknown_threshold')}` (serve_config.yaml); the validation split alone fits "
        f"T = {m.get('temperature_fitted_on_val')}.",
    ]
    if "randomized" in m:
        r = m["randomized"]
        rows.append(
            f"- Randomized scenes over the six backgrounds: accuracy "
            f"{_fmt(r['accuracy'])}, ECE {_fmt(r['ece'])} ({r['images']} images)."
        )
    if ood.get("photos"):
        rows.append(
            "- Each photograph (before → shipped): "
            + "; ".join(
                f"`{k}` {' '.join(map(str, bood.get('photos', {}).get(k, ['—'])))} → "
                f"{' '.join(map(str, v))}"
                for k, v in ood["photos"].items()
            )
        )
    rows.append(
        f"- Confusion matrix (rows true, columns predicted, order "
        f"{', '.join(m.get('classes', []))}): `{m.get('confusion_matrix_rows_true')}`"
    )
    if m.get("reliability_png"):
        rows += ["", f"![reliability diagram]({Path(m['reliability_png']).name})"]
    return rows


def _history(name: str, runs: list[dict], figure: Path | None) -> list[str]:
    """Every recorded run of the model and its validation curve."""
    if not runs:
        return []
    metric = runs[-1]["metric"]
    out = [
        "",
        f"Training history (`weights/training-log.json`; validation {metric} after each epoch, "
        "on the validation images of the sources named, so runs validated on different ones "
        "are not on one scale):",
        "",
        "| finished | where | from | epochs | hours | validated on | curve |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        curve = " → ".join(f"{e[run['metric']]:.3f}" for e in run["epochs"])
        out.append(
            f"| {run['finished']} | {run['device']} | `{run['init']}` | {len(run['epochs'])} | "
            f"{run['hours']} | {validated_on(run)} | {curve} |"
        )
    if figure is not None:
        out += ["", f"![{name} validation curve]({figure.name})"]
    return out


def validated_on(run: dict) -> str:
    """The sources whose validation images a run's curve is measured on: its ``val_sources``
    as the trainers record them; for runs logged before they did, the ``images`` line's
    "validated on ..."; else the whole validation split."""
    if run.get("val_sources"):
        return " ".join(run["val_sources"])
    found = re.search(r"validated on ([^)]+)\)", run.get("images", ""))
    return found.group(1) if found else "the whole split"


def curve_png(name: str, runs: list[dict], path: Path) -> Path | None:
    """The runs' curves end to end (epochs counted across runs), one colour per run."""
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    start = 0
    for run in runs:
        xs = [start + e["epoch"] for e in run["epochs"]]
        label = f"{run['finished'][:10]}, on {validated_on(run)}"
        ax.plot(xs, [e[run["metric"]] for e in run["epochs"]], "o-", label=label)
        start = xs[-1] if xs else start
    ax.set_xlabel("epoch (across runs)")
    ax.set_ylabel(f"validation {runs[-1]['metric']}")
    ax.set_title(f"{name}: one line per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render(metrics: dict, log: Path | None = None, figures: Path | None = None) -> str:
    from training import history

    base = metrics.get("baseline", {})
    total = sum(metrics[n]["weights_mb"] for n in CARDS if n in metrics)
    out = [
        "# Shipped weights: model cards",
        "",
        _data_section(),
        "",
        f"Weights together: {total:.1f} MB (bound 40 MB).",
        "",
    ]
    for name, card in CARDS.items():
        m = metrics.get(name)
        out += [
            f"## {name}",
            "",
            card["what"],
            "",
            "Reproduce:",
            "",
            "```sh",
            *card["commands"],
            "```",
            "",
        ]
        if m:
            out.append(
                f"Weights: `{m['weights']}` ({m['weights_mb']} MB), sha256 `{m['weights_sha256']}`"
            )
            out.append("")
            if "accuracy" in m:
                out += _classifier(m, base.get(name))
            else:
                out += _detector(name, m, base.get(name), card)
        runs = history.runs_of(name, log) if log is not None else []
        figure = curve_png(name, runs, figures / f"curve-{name}.png") if figures else None
        out += _history(name, runs, figure)
        out += ["", card["notes"], ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, default=Path("weights/metrics.json"))
    parser.add_argument("--out", type=Path, default=Path("weights/README.md"))
    parser.add_argument("--history", type=Path, default=Path("weights/training-log.json"))
    args = parser.parse_args(argv)
    metrics = json.loads(args.metrics.read_text())
    args.out.write_text(render(metrics, args.history, args.out.parent))


if __name__ == "__main__":
    main()
