"""The benchmark harness: metrics checked exactly against hand-computed values with a planted
encoder, dataset layouts found and refused like a user would meet them, and the real
`python -m engine eval` end to end with the tests' tiny model.

The tiny model has random weights: its recalls and accuracies are near chance and mean
nothing; those runs only prove the pipeline and the report, never quality.
"""
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.errors import EngineError
from engine.evaluation import (accuracy, confusion_matrix, evaluate_retrieval, evaluate_zeroshot,
                               first_relevant_rank, load_caption_dataset, load_image_folder, per_class_accuracy,
                               recall_at_k, retrieval_metrics)
from engine.evaluation.images import read_image
from engine.evaluation.report import dataset_fingerprint, write_confusion_csv

ROOT = Path(__file__).resolve().parents[1]
STEP = 15  # image i is a flat picture with red = 10 + STEP * i, which the planted encoder decodes


def flat_image(path: Path, ident: int, size=(30, 20)) -> None:
    """A small flat-coloured picture whose colour encodes ``ident`` (survives resize and crop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10 + STEP * ident, 80, 160)).save(path)


def unit(*pairs, dim=12) -> np.ndarray:
    """A unit vector from (axis, weight) pairs."""
    v = np.zeros(dim, dtype=np.float32)
    for axis, weight in pairs:
        v[axis] += weight
    return v / np.linalg.norm(v)


class PlantedEncoder:
    """Stands in for engine.encoder.Encoder with embeddings the test chooses.

    Images are recognised by their colour, texts by their exact string; an unknown text
    raises KeyError, so a caption from the wrong split could not slip in unnoticed.
    """

    image_size = 16

    def __init__(self, images, texts=None, classes=None):
        self.images, self.texts, self.classes = images, texts or {}, classes or {}
        self.dim = len(next(iter(images.values())))
        self.templates_seen = []
        self.tile_shapes = []

    def encode_images(self, tiles):
        self.tile_shapes.append(tiles.shape)
        ids = np.rint((tiles[..., 0].astype(float).mean(axis=(1, 2)) - 10) / STEP).astype(int)
        return np.stack([self.images[int(i)] for i in ids])

    def encode_texts(self, texts):
        return np.stack([self.texts[t] for t in texts])

    def encode_prompts(self, phrases, templates):
        self.templates_seen.append(tuple(templates))
        return np.stack([self.classes[p] for p in phrases])


# ---------------------------------------------------------------- metrics by hand

def test_recall_at_k_counts_ties_against_the_relevant_item():
    sim = np.array([[0.9, 0.5, 0.1, 0.3],
                    [0.2, 0.2, 0.8, 0.2],
                    [0.4, 0.1, 0.0, 0.7]])
    gt = np.array([[0, 1, 0, 0],
                   [1, 0, 0, 1],
                   [0, 0, 0, 1]], dtype=bool)
    # row 0: best relevant 0.5, one non-relevant above (0.9)                     -> rank 2
    # row 1: best relevant 0.2, non-relevant 0.8 above and 0.2 tied (counted)     -> rank 3
    # row 2: best relevant 0.7, nothing above                                     -> rank 1
    assert first_relevant_rank(sim, gt).tolist() == [2, 3, 1]
    assert recall_at_k(sim, gt, (1, 2, 3)) == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 100.0}, abs=1e-12)
    # A collapsed model (every score equal) must not look perfect: 1 relevant of 5 ranks last.
    flat = np.zeros((4, 5))
    assert recall_at_k(flat, np.eye(4, 5, dtype=bool), (1, 4, 5)) == {1: 0.0, 4: 0.0, 5: 100.0}


def test_accuracy_confusion_and_per_class():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 1, 0, 1, 1, 2, 0, 0]
    cm = confusion_matrix(y_true, y_pred, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [2, 0, 1, 0], [0, 0, 0, 0]]
    assert accuracy(y_true, y_pred) == 100 * 5 / 8
    assert per_class_accuracy(cm) == [pytest.approx(200 / 3), 100.0, pytest.approx(100 / 3), None]


# ---------------------------------------------------------------- planted retrieval on an RSITMD layout

# Twelve test images (ids 0-11, two captions each, texts ordered image by image) in 12-d.
# Image i is e_i and caption (i, c) is e_i, except the planted ones below.
IMAGES = {i: unit((i, 1)) for i in range(12)}
IMAGES[4] = unit((5, 1), (4, 0.5))                    # image 4 looks like image 5
IMAGES[7] = unit((8, 1), (9, 1), (10, 1), (7, 0.5))   # image 7 looks like images 8, 9, 10
CAPTIONS = {(i, c): unit((i, 1)) for i in range(12) for c in range(2)}
CAPTIONS[0, 0] = unit(*[(j, 1) for j in range(1, 7)], (0, 0.5))  # "Y": fits images 1-6 better than 0
CAPTIONS[0, 1] = unit((11, 1))                                    # "Z": describes image 11, not 0
CAPTIONS[1, 0] = unit((2, 2), (1, 1))                             # "X": fits image 2 better than 1
# Image -> text (rank of the best own caption; non-relevant ties count against it):
#   img 0: Y scores 0.2, no other caption has e_0                              rank 1
#   img 4: own 0.447 < image 5's two captions 0.894 and Y 0.537                rank 4
#   img 7: own 0.277 < the six captions of images 8-10 (0.555)                 rank 7
#   img 11: own 1.0 tied with Z 1.0 (non-relevant)                             rank 2
#   all others: an own caption scores 1.0, nothing ties                        rank 1
#   R@1 = 9/12 = 75, R@5 = 11/12 = 91.67, R@10 = 12/12 = 100
# Text -> image (rank of the caption's own image):
#   Y: images 1,2,3,5,6 score 0.4 and image 4 0.537, above image 0's 0.2       rank 7
#   Z: image 11 scores 1, image 0 scores 0 tied with the 10 others              rank 12
#   X: image 2 scores 0.894 above image 1's 0.447                              rank 2
#   the other 21 captions                                                      rank 1
#   R@1 = 21/24 = 87.5, R@5 = 22/24 = 91.67, R@10 = 23/24 = 95.83
# mR = (75 + 91.67 + 100 + 87.5 + 91.67 + 95.83) / 6 = 90.28
EXPECTED = {"i2t_R@1": 75.0, "i2t_R@5": 1100 / 12, "i2t_R@10": 100.0,
            "t2i_R@1": 87.5, "t2i_R@5": 2200 / 24, "t2i_R@10": 2300 / 24,
            "mR": (75.0 + 1100 / 12 + 100.0 + 87.5 + 2200 / 24 + 2300 / 24) / 6}


def caption(i, c):
    return f"planted caption {c} of image {i}"


def make_rsitmd(root: Path) -> Path:
    """RSITMD layout: dataset_RSITMD.json + images/*.tif; train and val entries mixed in."""
    entries = []
    for i in range(12):
        name = f"scene_{i}.tif"
        flat_image(root / "images" / name, i)
        entries.append({"filename": name, "split": "test", "imgid": i,
                        "sentences": [{"raw": caption(i, c), "tokens": []} for c in range(2)]})
        if i in (2, 7):
            flat_image(root / "images" / f"train_{i}.tif", 0)
            entries.append({"filename": f"train_{i}.tif", "split": "train",
                            "sentences": [{"raw": "a caption the test split must never use"}]})
    entries.insert(5, {"filename": "val_0.tif", "split": "val", "sentences": [{"raw": "validation only"}]})
    flat_image(root / "images" / "val_0.tif", 0)
    (root / "dataset_RSITMD.json").write_text(json.dumps({"images": entries, "dataset": "rsitmd"}))
    return root


def planted_retrieval_encoder():
    return PlantedEncoder(IMAGES, {caption(i, c): v for (i, c), v in CAPTIONS.items()})


def test_planted_retrieval_gives_the_hand_computed_recalls(tmp_path):
    data = load_caption_dataset(make_rsitmd(tmp_path / "RSITMD"), "rsitmd")
    assert [im.path.name for im in data.images] == [f"scene_{i}.tif" for i in range(12)]
    assert data.image_dir == tmp_path / "RSITMD" / "images"
    encoder = planted_retrieval_encoder()
    result = evaluate_retrieval(data, encoder, batch_size=5)
    assert (result.n_images, result.n_texts) == (12, 24)
    assert result.metrics == pytest.approx(EXPECTED, abs=1e-9)
    # 30x20 pictures reach the encoder resized and centre-cropped to its 16 px input, in batches of 5.
    assert [s for s in encoder.tile_shapes] == [(5, 16, 16, 3), (5, 16, 16, 3), (2, 16, 16, 3)]


def test_retrieval_metrics_directly_match_the_pipeline():
    image_emb = np.stack([IMAGES[i] for i in range(12)])
    text_emb = np.stack([CAPTIONS[i, c] for i in range(12) for c in range(2)])
    owners = [i for i in range(12) for _ in range(2)]
    assert retrieval_metrics(image_emb, text_emb, owners) == pytest.approx(EXPECTED, abs=1e-9)


def test_retrieval_reports_progress_and_stops_on_cancel(tmp_path):
    from engine.errors import Cancelled

    data = load_caption_dataset(make_rsitmd(tmp_path / "RSITMD"), "rsitmd")
    seen = []
    evaluate_retrieval(data, planted_retrieval_encoder(), batch_size=4, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 4
    encoder = planted_retrieval_encoder()
    with pytest.raises(Cancelled):
        evaluate_retrieval(data, encoder, batch_size=4, cancel=lambda: len(encoder.tile_shapes) >= 1)
    assert len(encoder.tile_shapes) == 1

def test_limit_takes_the_first_test_images_in_file_order(tmp_path):
    data = load_caption_dataset(make_rsitmd(tmp_path / "RSITMD"), "rsitmd", limit=3)
    assert [im.path.name for im in data.images] == ["scene_0.tif", "scene_1.tif", "scene_2.tif"]
    assert data.split_size == 12
    result = evaluate_retrieval(data, planted_retrieval_encoder())
    # Among images 0-2 only: every image finds an own caption first (i2t all 100); text->image:
    # Y ranks image 0 third (below 1 and 2 at 0.4), Z ranks it third (all tie at 0), X second.
    assert result.metrics["i2t_R@1"] == 100.0
    assert result.metrics["t2i_R@1"] == 50.0
    assert result.metrics["t2i_R@5"] == 100.0


# ---------------------------------------------------------------- planted zero-shot on an ImageFolder

def make_image_folder(root: Path) -> Path:
    """dense_residential (ids 0-2), forest (3-5), river (6-7)."""
    for folder, ids in (("dense_residential", (0, 1, 2)), ("forest", (3, 4, 5)), ("river", (6, 7))):
        for n, i in enumerate(ids):
            flat_image(root / folder / f"{folder}_{n:02d}.png", i, size=(24, 24))
    return root


def test_planted_zeroshot_accuracy_and_confusion(tmp_path):
    data = load_image_folder(make_image_folder(tmp_path / "scenes"))
    assert data.classes == ("dense residential", "forest", "river")
    classes = {"dense residential": unit((0, 1), dim=3), "forest": unit((1, 1), dim=3), "river": unit((2, 1), dim=3)}
    images = {0: unit((0, 1), dim=3), 1: unit((0, 1), dim=3), 2: unit((1, 1), dim=3),     # image 2 looks like forest
              3: unit((1, 1), dim=3), 4: unit((1, 1), dim=3), 5: unit((1, 0.9), (0, 0.3), dim=3),
              6: unit((2, 1), dim=3), 7: unit((0, 1), (2, 0.5), dim=3)}                # image 7 leans residential
    encoder = PlantedEncoder(images, classes=classes)
    templates = ("an overhead view of {}.", "{} from a drone.")
    result = evaluate_zeroshot(data, encoder, templates)
    assert encoder.templates_seen == [templates]
    # Truth in round-robin order: dr0 f0 r0 dr1 f1 r1 dr2 f2; wrong: dr2 -> forest, r1 -> dense residential.
    assert result.y_true.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert result.y_pred.tolist() == [0, 1, 2, 0, 1, 0, 1, 1]
    assert result.confusion.tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert result.top1 == 75.0                                         # 6 of 8
    assert result.per_class == [pytest.approx(200 / 3), 100.0, 50.0]
    assert result.mean_per_class == pytest.approx((200 / 3 + 100 + 50) / 3)

    csv_path = tmp_path / "cm.csv"
    write_confusion_csv(csv_path, data.classes, result.confusion)
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["true \\ predicted", "dense residential", "forest", "river"]
    assert rows[3] == ["river", "1", "0", "1"]


def test_image_folder_limit_is_round_robin_and_class_files_map_folders(tmp_path):
    root = make_image_folder(tmp_path / "scenes")
    data = load_image_folder(root, limit=4)
    assert [(p.name, c) for p, c in data.samples] == [("dense_residential_00.png", 0), ("forest_00.png", 1),
                                                      ("river_00.png", 2), ("dense_residential_01.png", 0)]
    mapping = tmp_path / "map.txt"
    mapping.write_text("# folder: phrase\nriver: river or canal\nforest: woodland\ndense_residential: houses\n")
    assert load_image_folder(root, mapping).classes == ("houses", "woodland", "river or canal")
    listed = tmp_path / "list.txt"
    listed.write_text("crowded houses\ntrees\nwater\n")
    assert load_image_folder(root, listed).classes == ("crowded houses", "trees", "water")
    listed.write_text("houses\ntrees\n")
    with pytest.raises(EngineError, match="lists 2 classes but the dataset has 3 class folders"):
        load_image_folder(root, listed)
    mapping.write_text("forest: woodland\nriver: water\n")
    with pytest.raises(EngineError, match="no class name for the folder.*dense_residential"):
        load_image_folder(root, mapping)


# ---------------------------------------------------------------- dataset errors a user meets

def test_dataset_errors_are_one_readable_sentence(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        load_caption_dataset(tmp_path / "missing", "rsicd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="No caption file found .*dataset_rsicd.json"):
        load_caption_dataset(tmp_path / "empty", "rsicd")
    with pytest.raises(EngineError, match="Unknown caption dataset format"):
        load_caption_dataset(tmp_path / "empty", "coco")

    trainonly = tmp_path / "trainonly"
    flat_image(trainonly / "RSICD_images" / "a.jpg", 0)
    (trainonly / "dataset_rsicd.json").write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}]},
        {"filename": "a.jpg", "split": "val", "sentences": [{"raw": "y"}]}]}))
    with pytest.raises(EngineError, match=r"no images in the 'test' split \(splits present: train \(1\), val \(1\)\)"):
        load_caption_dataset(trainonly, "rsicd")

    gone = tmp_path / "gone"
    flat_image(gone / "RSICD_images" / "a.jpg", 0)
    (gone / "dataset_rsicd.json").write_text(json.dumps({"images": [
        {"filename": n, "split": "test", "sentences": [{"raw": "x"}]} for n in ("a.jpg", "b.jpg", "c.jpg")]}))
    with pytest.raises(EngineError, match=r"2 of the 3 'test' images listed in dataset_rsicd.json are missing .*b.jpg"):
        load_caption_dataset(gone, "rsicd")

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset_rsicd.json").write_text("{not json")
    with pytest.raises(EngineError, match="Cannot read the caption file dataset_rsicd.json"):
        load_caption_dataset(tmp_path / "bad", "rsicd")

    one = tmp_path / "oneclass"
    flat_image(one / "forest" / "f.png", 0)
    with pytest.raises(EngineError, match="at least two class folders"):
        load_image_folder(one)
    with pytest.raises(EngineError, match="--limit must be at least 1"):
        load_image_folder(make_image_folder(tmp_path / "scenes"), limit=0)


def test_layout_variants_nested_folders_other_extensions_and_csv(tmp_path):
    # UCM-captions unpacked one level down, JSON naming .jpg while the files are numeric .tif.
    root = tmp_path / "UCM_captions_download"
    for i in range(3):
        flat_image(root / "UCM_captions" / "imgs" / f"{i + 1}.tif", i)
    entries = [{"filename": f"{i + 1}.jpg", "split": "test", "sentences": [{"raw": f"ucm {i}"}]} for i in range(3)]
    (root / "UCM_captions" / "dataset.json").write_text(json.dumps({"images": entries}))
    data = load_caption_dataset(root, "ucm")
    assert [im.path.name for im in data.images] == ["1.tif", "2.tif", "3.tif"]
    assert data.annotation.name == "dataset.json"

    # GeoRSCLIP's rsicd_test.csv (one filename,title row per caption) instead of the JSON.
    csvroot = tmp_path / "rsicd"
    for name in ("p.jpg", "q.jpg"):
        flat_image(csvroot / "RSICD_images" / name, 0)
    (csvroot / "rsicd_test.csv").write_text("filename,title\np.jpg,one\nq.jpg,two\np.jpg,three\n")
    data = load_caption_dataset(csvroot, "rsicd")
    assert [(im.path.name, im.captions) for im in data.images] == [("p.jpg", ("one", "three")), ("q.jpg", ("two",))]
    assert data.text_to_image.tolist() == [0, 0, 1]


def test_dataset_fingerprint_follows_files_and_annotation(tmp_path):
    root = make_rsitmd(tmp_path / "RSITMD")
    files = sorted((root / "images").glob("scene_*.tif"))
    ann = root / "dataset_RSITMD.json"
    first = dataset_fingerprint(root, files, ann)
    assert first == dataset_fingerprint(root, list(reversed(files)), ann)
    assert first != dataset_fingerprint(root, files[:-1], ann)
    ann.write_text(ann.read_text().replace("planted caption 0 of image 3", "changed"))
    assert first != dataset_fingerprint(root, files, ann)


def test_non_8bit_multiband_tiff_is_read_through_gdal_and_stretched(tmp_path):
    from osgeo import gdal

    path = tmp_path / "multispectral.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 20, 10, 4, gdal.GDT_UInt16)
    for b in range(4):
        ds.GetRasterBand(b + 1).WriteArray(np.tile(np.arange(20, dtype=np.uint16) * 100 * (b + 1), (10, 1)))
    ds = None
    pixels = read_image(path, 8)
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    # The 0-1900 ramp is stretched to 8 bits per band; the centre crop keeps the middle of it.
    row = pixels[0, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[-1] - row[0] > 100
    assert (pixels[..., 0] == pixels[..., 2]).all()


# ---------------------------------------------------------------- the real CLI with the tiny random model

def model_args(tiny_model):
    return ["--arch", str(tiny_model.config), "--checkpoint", str(tiny_model.checkpoint)]


def make_rsicd(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(1)
    (root / "RSICD_images").mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "RSICD_images" / f"airport_{i}.jpg")
    entries = [{"filename": f"airport_{i}.jpg", "split": "test" if i < n - 1 else "train", "imgid": i,
                "sentences": [{"raw": f"many planes parked near terminal {i} {c}"} for c in range(5)]}
               for i in range(n)]
    (root / "dataset_rsicd.json").write_text(json.dumps({"images": entries, "dataset": "rsicd"}))
    return root


def check_common_report(report, tiny_model, kind):
    assert report["kind"] == kind
    assert report["model"]["label"] == "tiny-clip.json + tiny-clip.pt"
    assert report["model"]["model"]["kind"] == "custom"
    assert report["model"]["checkpoint_sha256"] == hashlib.sha256(Path(tiny_model.checkpoint).read_bytes()).hexdigest()
    assert report["model"]["image_size"] == 32
    assert report["model"]["precision"] == report["settings"]["precision"] == "fp32"
    assert len(report["dataset"]["fingerprint"]) == 64
    assert report["created"] and report["timestamp"] > 0
    assert {"engine", "torch", "open_clip"} <= set(report["software"])


def test_cli_eval_retrieval_writes_a_report(tmp_path, tiny_model, capsys):
    """Random weights: the recalls below are near chance and mean nothing; only their form is checked."""
    root = make_rsicd(tmp_path / "RSICD")
    out = tmp_path / "reports" / "rsicd.json"
    out.parent.mkdir()
    code = main(["eval", "retrieval", "--dataset", str(root), "--format", "rsicd", *model_args(tiny_model),
                 "--batch-size", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    check_common_report(report, tiny_model, "retrieval")
    assert report["dataset"]["images"] == 5 and report["dataset"]["texts"] == 25
    assert report["dataset"]["split"] == "test" and report["dataset"]["name"] == "RSICD"
    assert report["settings"]["limit"] is None and report["settings"]["batch_size"] == 2
    metrics = report["metrics"]
    six = [metrics[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
    assert all(0.0 <= v <= 100.0 for v in six)
    assert metrics["mR"] == pytest.approx(sum(six) / 6)
    # 5 images: every caption's own image is in any top 5 and top 10.
    assert metrics["t2i_R@5"] == metrics["t2i_R@10"] == 100.0
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retrieval RSICD/test (5 images, 25 captions) | tiny-clip.json")
    assert f"mR {metrics['mR']:.2f}" in lines[0]
    assert str(out) in captured.err


@pytest.mark.slow
def test_cli_eval_retrieval_subprocess_with_limit_on_ucm_layout(tmp_path, tiny_model):
    root = tmp_path / "ucm"
    rng = np.random.default_rng(2)
    for i in range(4):
        (root / "imgs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.tif")
    entries = [{"filename": f"{i}.tif", "split": "test", "sentences": [{"raw": f"a river {i}"}, {"raw": f"water {i}"}]}
               for i in range(4)]
    (root / "dataset.json").write_text(json.dumps({"images": entries}))
    out = tmp_path / "ucm.json"
    proc = subprocess.run([sys.executable, "-m", "engine", "eval", "retrieval", "--dataset", str(root), "--format",
                           "ucm", *model_args(tiny_model), "--limit", "3", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["limit"] == 3
    assert (report["dataset"]["images"], report["dataset"]["texts"], report["dataset"]["split_images"]) == (3, 6, 4)
    assert proc.stdout.startswith("retrieval UCM-captions/test (3 images, 6 captions)")


def test_cli_eval_zeroshot_writes_report_and_confusion(tmp_path, tiny_model, capsys):
    """Random weights: the accuracy is near chance and means nothing; only the outputs are checked."""
    root = make_image_folder(tmp_path / "scenes")
    classes = tmp_path / "classes.txt"
    classes.write_text("dense_residential: dense residential area\nforest: forest\nriver: river\n")
    out = tmp_path / "zs.json"
    code = main(["eval", "zeroshot", "--dataset", str(root), "--classes-file", str(classes), "--templates",
                 "a satellite image of {}.;{} seen from above.", *model_args(tiny_model), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    check_common_report(report, tiny_model, "zeroshot")
    assert report["dataset"]["classes"] == ["dense residential area", "forest", "river"]
    assert report["settings"]["templates"] == ["a satellite image of {}.", "{} seen from above."]
    metrics = report["metrics"]
    assert 0.0 <= metrics["top1"] <= 100.0
    assert np.array(metrics["confusion"]).sum() == 8
    assert np.array(metrics["confusion"]).sum(axis=1).tolist() == [3, 3, 2]
    assert set(metrics["per_class"]) == {"dense residential area", "forest", "river"}
    correct = np.trace(np.array(metrics["confusion"]))
    assert metrics["top1"] == pytest.approx(100 * correct / 8)
    rows = list(csv.reader((tmp_path / "zs.confusion.csv").open()))
    assert [r[0] for r in rows[1:]] == ["dense residential area", "forest", "river"]
    with Image.open(tmp_path / "zs.confusion.png") as png:
        assert png.format == "PNG" and png.size[0] >= 300
    assert captured.out.startswith("zeroshot scenes (8 images, 3 classes) | tiny-clip.json + tiny-clip.pt | top-1 ")


def test_cli_eval_dataset_error_is_one_line_without_traceback(tmp_path, tiny_model, capsys):
    (tmp_path / "nothing").mkdir()
    code = main(["eval", "retrieval", "--dataset", str(tmp_path / "nothing"), "--format", "rsitmd",
                 *model_args(tiny_model), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"rsclip: error: No caption file found under {tmp_path / 'nothing'}: expected "
                                        "dataset_RSITMD.json (Karpathy-style JSON) or a <name>_test.csv with "
                                        "filename and title columns."]
    assert not (tmp_path / "r.json").exists()
