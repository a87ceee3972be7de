"""The drawn result (docs/api.md §E1): the input as displayed, boxes from the stored result."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from serve_app.tasks.visualize import COLOURS
from tests.api.conftest import submit

# A cube box in the middle, turned a quarter of π (45°), and a weak sphere at the left.
CUBE = {
    "primitive_class": "cube",
    "x": 0.5,
    "y": 0.5,
    "width": 0.4,
    "height": 0.2,
    "rotation": 0.25,
    "probability": 0.9,
}
SPHERE = {
    "primitive_class": "sphere",
    "x": 0.15,
    "y": 0.5,
    "width": 0.1,
    "height": 0.2,
    "rotation": 0.0,
    "probability": 0.3,
}


def _photo(width: int, height: int, orientation: int | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (250, 250, 250))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _close(pixel, colour, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def _near(picture: Image.Image, xy: tuple[float, float], colour, radius=3) -> bool:
    x0, y0 = round(xy[0]), round(xy[1])
    return any(
        _close(picture.getpixel((x, y)), colour)
        for x in range(x0 - radius, x0 + radius + 1)
        for y in range(y0 - radius, y0 + radius + 1)
    )


def test_boxes_are_drawn_where_the_result_puts_them(client, alice, finish):
    task_id = submit(client, alice, _photo(400, 300))
    finish([CUBE, SPHERE], image_class="office")
    response = client.get(f"/api/tasks/{task_id}/visualization", headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert picture.size == (400, 300)
    # The cube's box is 160 x 60 px turned 45° about (200, 150): its corner
    # centre + R(45°)·(80, 30) = (235.4, 227.8) is outlined in the cube's colour...
    assert _near(
        picture, (200 + 80 * 0.7071 - 30 * 0.7071, 150 + 80 * 0.7071 + 30 * 0.7071), COLOURS["cube"]
    )
    assert _near(
        picture, (200 - 80 * 0.7071 + 30 * 0.7071, 150 - 80 * 0.7071 - 30 * 0.7071), COLOURS["cube"]
    )
    # ...while an unturned box's corner (280, 180) is not, nor the centre.
    assert not _near(picture, (280, 180), COLOURS["cube"])
    assert _close(picture.getpixel((200, 150)), (250, 250, 250))
    # The sphere's left edge at x = 40, y = 150.
    assert _near(picture, (40, 150), COLOURS["sphere"])


def test_min_probability_hides_weaker_boxes_and_jpeg_is_given_when_asked(client, alice, finish):
    task_id = submit(client, alice, _photo(400, 300))
    finish([CUBE, SPHERE])
    response = client.get(
        f"/api/tasks/{task_id}/visualization",
        params={"min_probability": 0.5},
        headers={**alice, "Accept": "image/jpeg"},
    )
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content.startswith(b"\xff\xd8\xff")
    picture = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert not _near(picture, (40, 150), COLOURS["sphere"], radius=1)
    assert _near(picture, (235.4, 227.8), COLOURS["cube"])


def test_the_picture_is_the_input_as_displayed(client, alice, finish):
    # Stored 400 x 200 with EXIF orientation 6 (turn 90° clockwise): displayed 200 x 400.
    task_id = submit(client, alice, _photo(400, 200, orientation=6))
    finish([CUBE])
    response = client.get(f"/api/tasks/{task_id}/visualization", headers=alice)
    assert Image.open(io.BytesIO(response.content)).size == (200, 400)


def test_unchanged_pictures_revalidate_with_their_etag(client, alice, finish):
    task_id = submit(client, alice, _photo(120, 80))
    finish([CUBE])
    first = client.get(f"/api/tasks/{task_id}/visualization", headers=alice)
    etag = first.headers["etag"]
    again = client.get(
        f"/api/tasks/{task_id}/visualization", headers={**alice, "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b""
    other = client.get(
        f"/api/tasks/{task_id}/visualization",
        params={"min_probability": 0.95},
        headers={**alice, "If-None-Match": etag},
    )
    assert other.status_code == 200  # other options, another picture


def test_a_task_not_done_is_409_and_others_tasks_404(client, alice, bob, sample_jpeg):
    task_id = submit(client, alice, sample_jpeg)
    response = client.get(f"/api/tasks/{task_id}/visualization", headers=alice)
    assert response.status_code == 409
    assert response.json() == {"detail": f"Task {task_id} is not done."}
    client.post(f"/api/tasks/{task_id}/cancel", headers=alice)
    assert client.get(f"/api/tasks/{task_id}/visualization", headers=alice).status_code == 409
    theirs = client.get(f"/api/tasks/{task_id}/visualization", headers=bob)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": f"Task with id {task_id} does not exist."}
    assert client.get(f"/api/tasks/{task_id}/visualization").status_code == 401


def test_a_picture_asked_for_again_is_not_drawn_again(client, alice, finish, monkeypatch):
    """Found by the outside review: every GET decoded and encoded the whole input again."""
    from serve_app.tasks import pictures

    drawn: list[int] = []
    real = pictures.draw_result

    def counted(*args, **kwargs):
        drawn.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pictures, "draw_result", counted)
    task_id = submit(client, alice, _photo(320, 200))
    finish([CUBE, SPHERE])
    first = client.get(f"/api/tasks/{task_id}/visualization", headers=alice)
    again = client.get(f"/api/tasks/{task_id}/visualization", headers=alice)
    assert first.status_code == again.status_code == 200 and first.content == again.content
    assert len(drawn) == 1
    other = client.get(f"/api/tasks/{task_id}/visualization?min_probability=0.5", headers=alice)
    assert other.status_code == 200 and other.content != first.content and len(drawn) == 2


def test_one_user_gets_at_most_two_pictures_drawn_at_once(client, alice, bob, finish, monkeypatch):
    from serve_app.tasks import pictures

    release, started = threading.Event(), threading.Semaphore(0)
    real = pictures.draw_result

    def slow(*args, **kwargs):
        started.release()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(pictures, "draw_result", slow)
    mine = [submit(client, alice, _photo(320, 200 + i)) for i in range(3)]
    theirs = submit(client, bob, _photo(300, 200))
    finish([CUBE])
    with ThreadPoolExecutor(4) as pool:
        first_two = [
            pool.submit(client.get, f"/api/tasks/{t}/visualization", headers=alice)
            for t in mine[:2]
        ]
        assert started.acquire(timeout=10) and started.acquire(timeout=10)
        third = client.get(f"/api/tasks/{mine[2]}/visualization", headers=alice)
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert "drawn at once" in third.json()["detail"]
        bobs = pool.submit(client.get, f"/api/tasks/{theirs}/visualization", headers=bob)
        # Another user's picture starts while Alice's two still hold theirs: a user's share
        # is below the replica's.
        assert started.acquire(timeout=10), "Bob's drawing waited for Alice's"
        release.set()
        assert [f.result().status_code for f in first_two] == [200, 200]
        assert bobs.result().status_code == 200
