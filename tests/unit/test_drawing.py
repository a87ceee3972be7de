"""The drawn result (serve_app/tasks/visualize.py): the scene's label never hides a box's."""

from __future__ import annotations

import io

from PIL import Image

from serve_app.tasks.visualize import COLOURS, draw_result


def picture(primitives: list[dict]) -> Image.Image:
    blank = io.BytesIO()
    Image.new("RGB", (400, 300), (250, 250, 250)).save(blank, format="PNG")
    drawn = draw_result(blank.getvalue(), image_class="office", primitives=primitives)
    return Image.open(io.BytesIO(drawn)).convert("RGB")


def test_a_box_label_in_the_top_left_corner_stays_visible():
    """Seen in Chromium: the scene label, always at the top-left, hid a cylinder's 0.75."""
    cylinder = {
        "primitive_class": "cylinder",
        "probability": 0.75,
        "x": 0.2,
        "y": 0.2,
        "width": 0.4,
        "height": 0.4,
        "rotation": 0.0,
    }
    drawn = picture([cylinder])
    assert drawn.getpixel((2, 2)) == COLOURS["cylinder"]  # its label's patch, uncovered
    # The scene label went to another corner: top-right here.
    assert drawn.getpixel((397, 2)) == (32, 32, 32)


def test_with_no_boxes_the_scene_label_is_top_left():
    assert picture([]).getpixel((2, 2)) == (32, 32, 32)
