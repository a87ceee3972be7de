"""The detectors' trainers: how often each source's training images are drawn; CPU threads."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ultralytics.utils import torch_utils

from inference.predictors import set_ultralytics_cpu_threads
from training.dataset import Item
from training.mix import parse_mix
from training.train_ssd import training_items
from training.train_yolo import mixed_dataset


@pytest.fixture
def data_yaml(tmp_path: Path) -> Path:
    root = tmp_path / "primitives"
    for split, sources in {
        "train": {"raycast": 4, "classic": 6, "noise": 3},
        "val": {"raycast": 2, "classic": 3, "distractors": 1},
    }.items():
        (root / "images" / split).mkdir(parents=True)
        for source, n in sources.items():
            for i in range(n):
                (root / "images" / split / f"{source}-{i:06d}.jpg").write_bytes(b"")
    spec = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "names": {0: "sphere", 1: "cube"},
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root / "dataset.yaml"


def test_each_source_is_drawn_by_its_weight(data_yaml: Path, tmp_path: Path) -> None:
    out = mixed_dataset(data_yaml, parse_mix(["raycast=2", "classic=0.5"]), tmp_path / "run")
    spec = yaml.safe_load(out.read_text())
    lines = Path(spec["train"]).read_text().split()
    drawn = {
        s: sum(Path(x).name.startswith(s + "-") for x in lines)
        for s in ("raycast", "classic", "noise")
    }
    assert drawn == {"raycast": 8, "classic": 3, "noise": 3}
    # Half of a source is its first images, and every line is an image that exists.
    assert sorted(Path(x).name for x in lines if "classic" in x) == [
        f"classic-{i:06d}.jpg" for i in range(3)
    ]
    assert all(Path(x).is_file() for x in lines)
    # Validation, test and class names are the data set's own.
    root = data_yaml.parent
    assert spec["val"] == str(root / "images/val")
    assert spec["test"] == str(root / "images/test")
    assert spec["names"] == {0: "sphere", 1: "cube"}


def test_a_weight_of_zero_leaves_a_source_out(data_yaml: Path, tmp_path: Path) -> None:
    out = mixed_dataset(data_yaml, {"noise": 0.0}, tmp_path / "run")
    lines = Path(yaml.safe_load(out.read_text())["train"]).read_text().split()
    assert len(lines) == 10
    assert not any("noise" in x for x in lines)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["raycast"], "expected SOURCE=WEIGHT"),
        (["raycast=two"], "expected SOURCE=WEIGHT"),
        (["raycast=-1"], "0 or more"),
    ],
)
def test_a_malformed_mix_says_what_is_wrong(items: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        parse_mix(items)


def test_a_source_not_in_the_data_set_is_refused(data_yaml: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"\['raycats'\], not among the sources"):
        mixed_dataset(data_yaml, {"raycats": 2.0}, tmp_path / "run")


def test_validation_can_be_only_the_target_sources(data_yaml: Path, tmp_path: Path) -> None:
    out = mixed_dataset(data_yaml, {}, tmp_path / "run", ["raycast", "distractors"])
    spec = yaml.safe_load(out.read_text())
    val = sorted(Path(x).name for x in Path(spec["val"]).read_text().split())
    assert val == ["distractors-000000.jpg", "raycast-000000.jpg", "raycast-000001.jpg"]
    assert all(Path(x).is_file() for x in Path(spec["val"]).read_text().split())
    # The training images are all drawn, once each.
    assert len(Path(spec["train"]).read_text().split()) == 13


def test_a_validation_source_not_in_the_split_is_refused(data_yaml: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--val-sources names \['randomized'\]"):
        mixed_dataset(data_yaml, {}, tmp_path / "run", ["raycast", "randomized"])


def test_the_ssd_trainer_draws_the_same_images_for_the_same_mix(
    data_yaml: Path, tmp_path: Path
) -> None:
    """train_ssd groups its labelled items by their image's source and draws them as YOLO's
    list file does, so a sitting of each sees the same share of each source."""
    mix = parse_mix(["raycast=2", "classic=0.5", "noise=0"])
    out = mixed_dataset(data_yaml, mix, tmp_path / "run")
    yolo = Path(yaml.safe_load(out.read_text())["train"]).read_text().split()
    images = sorted((data_yaml.parent / "images" / "train").glob("*.jpg"))
    none = np.zeros(0, dtype=np.int64)
    items = [Item(image, -1, none, np.zeros((0, 4, 2))) for image in images]
    ssd = training_items(items, mix)
    assert sorted(str(i.image) for i in ssd) == sorted(yolo)
    assert len(ssd) == 11


def test_cpu_training_uses_the_threads_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """ultralytics' own default is one core fewer than the machine has (one of two here)."""
    monkeypatch.setattr(torch_utils, "NUM_THREADS", torch_utils.NUM_THREADS)  # put back after
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        set_ultralytics_cpu_threads(3)
        torch_utils.select_device("cpu", verbose=False)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_mined_images_are_one_more_source_drawn_by_its_weight(
    data_yaml: Path, tmp_path: Path
) -> None:
    """The hard negatives training.mine lists come on top of their own source's share, for
    YOLO's list file and SSD's items alike."""
    root = data_yaml.parent / "images" / "train"
    listed = tmp_path / "mined.txt"
    listed.write_text(f"{root / 'noise-000001.jpg'}\n{root / 'classic-000004.jpg'}\n")
    mix = parse_mix(["mined=3", "classic=0.5"])
    out = mixed_dataset(data_yaml, mix, tmp_path / "run", mined=listed)
    lines = [
        Path(x).name for x in Path(yaml.safe_load(out.read_text())["train"]).read_text().split()
    ]
    assert lines.count("noise-000001.jpg") == 1 + 3
    assert lines.count("classic-000004.jpg") == 3  # not in classic's first half: mined only
    assert lines.count("noise-000000.jpg") == 1
    assert len(lines) == 4 + 3 + 3 + 6
    none = np.zeros(0, dtype=np.int64)
    items = [Item(image, -1, none, np.zeros((0, 4, 2))) for image in sorted(root.glob("*.jpg"))]
    ssd = [i.image.name for i in training_items(items, mix, mined=listed)]
    assert sorted(ssd) == sorted(lines)


def test_a_mined_list_that_is_missing_or_names_other_images_is_refused(
    data_yaml: Path, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        mixed_dataset(data_yaml, {}, tmp_path / "run", mined=tmp_path / "absent.txt")
    listed = tmp_path / "mined.txt"
    listed.write_text("/elsewhere/distractors-000009.jpg\n")
    with pytest.raises(SystemExit, match="1 of its images are not training images"):
        mixed_dataset(data_yaml, {}, tmp_path / "run", mined=listed)


def test_the_class_balance_of_what_is_drawn_is_logged(
    data_yaml: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = data_yaml.parent / "labels" / "train"
    labels.mkdir(parents=True)
    # Each raycast image shows two spheres and a cube; classic-000000 a cube; the rest nothing.
    for i in range(4):
        (labels / f"raycast-{i:06d}.txt").write_text(
            "0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n0 0.5 0.5 0.6 0.5 0.6 0.6 0.5 0.6\n"
            "1 0.3 0.3 0.4 0.3 0.4 0.4 0.3 0.4\n"
        )
    (labels / "classic-000000.txt").write_text("1 0.3 0.3 0.4 0.3 0.4 0.4 0.3 0.4\n")
    with caplog.at_level("INFO", logger="training.train_yolo"):
        mixed_dataset(data_yaml, parse_mix(["raycast=2", "classic=0.5"]), tmp_path / "run")
    # 14 images drawn: raycast 8 (16 spheres, 8 cubes), classic 3 (one cube), noise 3.
    assert "sphere 64.0% 57.1%, cube 36.0% 64.3%" in caplog.text, caplog.text
