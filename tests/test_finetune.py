"""Fine-tuning (illustpose.finetune, ``python -m illustpose finetune``) on the sample illustrations.

The base weights are random (a feat_match network at a small crop, 64 px, heatmap 32, so a
step costs ~0.1 s); no number here is a model result.  One thread: the test machine's cores
are shared, and many small ops are far slower on two contended threads than on one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from illustpose.checkpoints import read_checkpoint, read_torch_zip, save_safetensors
from illustpose.cli import main
from illustpose.errors import FinetuneError
from illustpose.finetune import (FinetuneConfig, augment_batch, finetune, finetune_metadata, state_path,
                                 target_heatmaps)
from illustpose.keypoints import flip_permutation, mirror_keypoints
from illustpose.models.feat_match import FeatMatchPoseNet

from shared_data import REPO, SAMPLES

SAMPLES_JSON = REPO / "tests" / "data" / "samples_coco.json"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is not present")
FAST = dict(lambda_match=0.0, batch_size=1)


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Random feat_match weights at a 64 px crop (heatmap 32), with training hyper-parameters."""
    torch.manual_seed(0)
    net = FeatMatchPoseNet(heatmap_size=32, trunk_input_size=64)
    hp = {"largs": {"danbooru_coco": {"size": 64, "padding": 0.1}, "danbooru_sfw": {"size": 64}},
          "margs": {"size": 32, "lr": 0.01, "lambda_match": 1.0}}
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_safetensors(path, net.state_dict(), model="feat_match", hparams=hp)
    return path


def coco_subset(path, count: int | None = None, swap: bool = False):
    """The sample annotations (first ``count`` images), left and right labels swapped if asked."""
    doc = json.loads(SAMPLES_JSON.read_text())
    keep = {img["id"] for img in doc["images"][:count]}
    doc["images"] = [img for img in doc["images"] if img["id"] in keep]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    if swap:
        perm = flip_permutation(17)
        for a in doc["annotations"]:
            triples = np.asarray(a["keypoints"]).reshape(17, 3)[list(perm)]
            a["keypoints"] = triples.reshape(-1).tolist()
    path.write_text(json.dumps(doc))
    return path


def scores(weights, annotations) -> dict:
    """``{metric: mean}`` of ``weights`` on ``annotations`` (library loader, ground-truth boxes)."""
    from illustpose.datasets import read_coco
    from illustpose.evaluation import evaluate_predictions
    from illustpose.images import load_image
    from illustpose.keypoints import to_coco_annotation
    from illustpose.models.pose import PoseEstimator

    est = PoseEstimator.from_checkpoint(read_checkpoint(weights))
    preds = []
    for rec in read_coco(annotations):
        for ann in rec.annotations:
            p = est(load_image(SAMPLES / rec.file_name), ann.bbox.tolist())
            preds.append(to_coco_annotation(p.keypoints, p.scores, ann.bbox, image_id=rec.id, ann_id=ann.id))
    summary = evaluate_predictions(read_coco(annotations), preds)
    return {k: v["mean"] for k, v in summary["metrics"].items()}


def tensors(path) -> dict:
    return read_checkpoint(path).state_dict


def test_targets_peak_on_labelled_joints_and_weigh_nothing_else():
    kp = np.zeros((1, 17, 2))
    kp[0, 0] = (20.0, 40.0)  # crop (row, col) of a 64 px crop -> cell (10, 20) of a 32 heatmap
    kp[0, 1] = (-10.0, 5.0)  # off the crop
    vis = np.full((1, 17), 2)
    vis[0, 2] = 0
    t, w = target_heatmaps(kp, vis, 64, 32, sigma=1.0)
    assert t.shape == (1, 25, 32, 32) and w.shape == (1, 25)
    assert np.unravel_index(int(t[0, 0].argmax()), (32, 32)) == (10, 20) and float(t[0, 0].max()) == 1.0
    assert w[0, 0] == 1 and w[0, 1] == 0 and w[0, 2] == 0 and (w[0, 17:] == 0).all()


def test_augmentation_moves_keypoints_with_the_pixels():
    # the library's pixel frame (geometry.py): pixel u spans [u, u + 1), its centre is u + 0.5;
    # a blob centred on the left wrist's label must stay centred on it, to a tenth of a pixel
    size, centre = 64, np.array([22.3, 41.7])
    mid = np.arange(size) + 0.5
    blob = np.exp(-((mid[:, None] - centre[0]) ** 2 + (mid[None, :] - centre[1]) ** 2) / (2 * 2.0**2))
    crop = torch.from_numpy(blob).float().expand(1, 3, size, size).contiguous()
    kp = np.zeros((1, 17, 2))
    kp[0, COCO_LEFT_WRIST] = centre
    vis = np.zeros((1, 17), dtype=int)
    vis[0, COCO_LEFT_WRIST] = 2
    right = flip_permutation(17)[COCO_LEFT_WRIST]
    for flip, scale, angle in [(True, 1.0, 0.0), (False, 1.2, 0.0), (False, 1.0, 25.0), (True, 0.8, -30.0),
                               (True, 1.25, 17.0)]:
        out, kp2, vis2 = augment_batch(crop, kp, vis, np.array([flip]), np.array([scale]), np.array([angle]))
        joint = right if flip else COCO_LEFT_WRIST  # flipped: the left wrist is now the right one
        assert vis2[0, joint] == 2 and (vis2[0] > 0).sum() == 1
        w = out[0, 0].double().numpy()
        centroid = np.array([(w.sum(1) * mid).sum(), (w.sum(0) * mid).sum()]) / w.sum()
        assert np.abs(centroid - kp2[0, joint]).max() < 0.1, (flip, scale, angle, centroid, kp2[0, joint])
    # a flip is keypoints.mirror_keypoints of the crop (x' = S - x), in (row, col)
    _, flipped, _ = augment_batch(crop, kp, vis, np.array([True]), np.array([1.0]), np.array([0.0]))
    mirrored = mirror_keypoints(kp[0, :, ::-1], size)[:, ::-1]
    assert np.allclose(flipped[0], mirrored, atol=1e-9)
    same, kp3, _ = augment_batch(crop, kp, vis, np.array([False]), np.array([1.0]), np.array([0.0]))
    assert torch.allclose(same, crop, atol=1e-4) and np.allclose(kp3, kp)


def test_targets_decode_back_to_their_keypoints():
    # target_heatmaps' grid is the decoder's: cell i is crop pixel i * S / h (decode_heatmaps,
    # inference's smoothing), so a target decodes to its keypoint within half a cell (1 px here)
    from illustpose.heatmaps import decode_heatmaps

    kp = np.array([[[20.0, 40.0], [20.6, 40.2], [33.9, 9.1]]])
    t, _ = target_heatmaps(kp, np.full((1, 3), 2), 64, 32, sigma=1.0, channels=3)
    decoded, _, _ = decode_heatmaps(torch.logit(t.clamp(1e-6, 1 - 1e-6)), (64, 64))
    assert decoded[0, 0].tolist() == [20.0, 40.0]  # a keypoint on a cell corner: exact
    assert np.abs(decoded[0].numpy() - kp[0]).max() <= 1.0


COCO_LEFT_WRIST = 9


def test_features_last_is_the_keypoint_head_before_score_lowres():
    import torch.nn.functional as F

    from illustpose.models.keypoint_rcnn import KeypointHead

    torch.manual_seed(0)
    head = KeypointHead(in_channels=8, conv_dims=(16,) * 8).eval()
    x = torch.randn(2, 8, 14, 14)
    with torch.no_grad():
        feats = head.features_last(x)
        again = F.interpolate(head.score_lowres(feats), scale_factor=2.0, mode="bilinear", align_corners=False)
        assert feats.shape == (2, 16, 14, 14) and (feats >= 0).all()
        assert torch.equal(again, head(x))


def test_loss_decreases_and_only_the_head_changes(base, tmp_path):
    ann = coco_subset(tmp_path / "train.json", 3)
    out = tmp_path / "style.safetensors"
    lines = []
    result = finetune(base, ann, SAMPLES, out, config=FinetuneConfig(epochs=3, **FAST), report=lines.append)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] and len(lines) == 3 and "loss" in lines[0]
    before, after = tensors(base), tensors(out)
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith("resnet.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # bit-identical
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("keypoint_head."))


def test_swapped_left_right_labels_are_learned(base, tmp_path):
    swapped = coco_subset(tmp_path / "swapped.json", 4, swap=True)
    original = coco_subset(tmp_path / "original.json", 4)
    out = tmp_path / "swapped.safetensors"
    start = scores(base, swapped)["pdj@0.2"]
    finetune(base, swapped, SAMPLES, out, config=FinetuneConfig(epochs=25, augment=False, sigma=2.0, **FAST))
    learned, other = scores(out, swapped)["pdj@0.2"], scores(out, original)["pdj@0.2"]
    # from random weights: 100 steps move PDJ@0.2 against the swapped labels from 0 to 0.68 (0.78 and
    # 0.81 with two other random bases), while the unswapped labels stay at 0.22 to 0.25
    assert start < 0.1 and learned > 0.5 and learned > other + 0.3, (start, learned, other)
    before, after = tensors(base), tensors(out)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("resnet."))


def test_resume_continues_as_if_never_interrupted(base, tmp_path):
    ann = coco_subset(tmp_path / "train.json", 2)
    config = FinetuneConfig(epochs=2, batch_size=2, lambda_match=0.0)
    whole = finetune(base, ann, SAMPLES, tmp_path / "whole.safetensors", config=config, val_annotations=ann)

    def stop_after_first(line):
        raise KeyboardInterrupt

    out = tmp_path / "cut.safetensors"
    with pytest.raises(KeyboardInterrupt):
        finetune(base, ann, SAMPLES, out, config=config, val_annotations=ann, report=stop_after_first)
    assert finetune_metadata(out)["epochs"] == 1 and state_path(out).is_file()  # epoch 1 kept on disk
    resumed = finetune(base, ann, SAMPLES, out, config=config, val_annotations=ann, resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    a, b = tensors(tmp_path / "whole.safetensors"), tensors(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metadata["best_epoch"] == whole.metadata["best_epoch"]
    # a raised --epochs trains on as a run started with it (feat_match: no schedule over the epochs)
    longer = FinetuneConfig(epochs=3, batch_size=2, lambda_match=0.0)
    whole3 = finetune(base, ann, SAMPLES, tmp_path / "whole3.safetensors", config=longer, val_annotations=ann)
    more = finetune(base, ann, SAMPLES, out, config=longer, val_annotations=ann, resume=True)
    assert [h["loss"] for h in more.history] == [h["loss"] for h in whole3.history] and more.epochs == 3
    a, b = tensors(tmp_path / "whole3.safetensors"), tensors(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FinetuneError, match="another run.*seed"):
        finetune(base, ann, SAMPLES, out, config=FinetuneConfig(epochs=3, batch_size=2, lambda_match=0.0, seed=1),
                 resume=True)


def test_resume_refuses_a_damaged_or_foreign_state_in_one_line(base, tmp_path):
    import pathlib

    ann = coco_subset(tmp_path / "train.json", 1)
    out = tmp_path / "o.safetensors"
    finetune(base, ann, SAMPLES, out, config=FinetuneConfig(epochs=1, **FAST))
    whole = state_path(out).read_bytes()
    cases = {  # what the state file holds -> the message
        "missing": ({"version": 1, "run": {}, "epoch": 1}, r"damaged \(missing or malformed: head, optimizer, "),
        "wrong type": ({**read_torch_zip(state_path(out)), "history": {}}, "malformed: history"),
        "foreign global": ({"version": 1, "where": pathlib.PurePosixPath("/")}, r"cannot be read \(Unsafe"),
        "truncated": (whole[: len(whole) // 2], r"cannot be read \(CheckpointError"),
    }
    for name, (content, message) in cases.items():
        if isinstance(content, bytes):
            state_path(out).write_bytes(content)
        else:
            torch.save(content, state_path(out))
        with pytest.raises(FinetuneError, match=message) as e:
            finetune(base, ann, SAMPLES, out, config=FinetuneConfig(epochs=2, **FAST), resume=True)
        assert "\n" not in str(e.value), name


def test_float_flags_take_any_finite_number(base, tmp_path, capsys):
    import argparse

    from illustpose.cli.pipeline import non_negative_float, positive_float

    assert [non_negative_float(t) for t in ("0", "0.00", "0e0", "-0", "2.5")] == [0.0, 0.0, 0.0, 0.0, 2.5]
    assert positive_float("1e-4") == 1e-4
    for parse, text in [(positive_float, "0"), (positive_float, "0.00"), (non_negative_float, "-1"),
                        (non_negative_float, "nan"), (positive_float, "inf"), (positive_float, "x")]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number"):
            parse(text)
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--images", ".", "--annotations", "a.json", "--out", "o.safetensors", "--lr", "nan"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_matching_loss_trains_the_matcher_against_the_rcnn_features(base, tmp_path, monkeypatch):
    import illustpose.finetune as ft

    ann = coco_subset(tmp_path / "train.json", 1)
    with pytest.raises(FinetuneError, match="no Keypoint R-CNN tensors.*--rcnn-weights"):
        finetune(base, ann, SAMPLES, tmp_path / "x.safetensors", config=FinetuneConfig(epochs=1))

    class StandIn(torch.nn.Module):  # the R-CNN's features_last, without the 800 px ResNet-101
        def features_last(self, x):
            return torch.full((x.shape[0], 512, 14, 14), 0.5)

    monkeypatch.setattr(ft, "_rcnn_branch", lambda ckpt, rcnn_weights, lam: StandIn())
    out = tmp_path / "match.safetensors"
    result = finetune(base, ann, SAMPLES, out, config=FinetuneConfig(epochs=1, batch_size=1))
    assert result.history[0]["loss_match"] > 0 and result.metadata["lambda_match"] == 1.0
    key = "keypoint_head.matcher_rcnn.1.weight"
    assert not torch.equal(tensors(base)[key], tensors(out)[key])


def test_segmenter_boxes_crop_the_drawings_as_annotate_does(tmp_path):
    from types import SimpleNamespace

    from illustpose.datasets import read_coco
    from illustpose.finetune import load_samples, segmenter_boxes

    records = read_coco(coco_subset(tmp_path / "one.json", 1))
    box = records[0].annotations[0].bbox.tolist()
    near = [box[0] + 3, box[1] - 2, box[2] * 1.1, box[3]]  # the same character, a slightly other box
    far = [0, 0, 4, 4]
    own, by_segmenter, unmatched = (load_samples(records, SAMPLES, 64, 0.1, boxes=b)[0]
                                    for b in (None, lambda image: [far, near], lambda image: [far]))
    assert by_segmenter.segmenter_box and not own.segmenter_box and not unmatched.segmenter_box
    assert torch.equal(unmatched.crop, own.crop) and not torch.equal(by_segmenter.crop, own.crop)
    assert not np.allclose(by_segmenter.keypoints_rc, own.keypoints_rc)  # the keypoints follow their crop
    mask = np.zeros((40, 60), np.uint8)
    mask[5:25, 10:30] = 255
    fake = SimpleNamespace(segment=lambda images: [SimpleNamespace(mask=mask)], bbox_threshold=0.5)
    assert segmenter_boxes(fake)(None) == [[9, 4, 21, 21]]  # annotate's split and the reference's box rule


def test_bad_training_data_is_one_clear_error(base, tmp_path):
    doc = json.loads(SAMPLES_JSON.read_text())
    doc["images"][0]["file_name"] = "nowhere.png"
    (tmp_path / "missing.json").write_text(json.dumps(doc))
    doc = json.loads(SAMPLES_JSON.read_text())
    doc["annotations"][0]["keypoints"] = [0] * 51
    (tmp_path / "unlabelled.json").write_text(json.dumps(doc))
    doc["annotations"] = []
    (tmp_path / "empty.json").write_text(json.dumps(doc))
    cases = {"missing": "'nowhere.png' is not in", "unlabelled": "has no labelled keypoint",
             "empty": "no image has a keypoint annotation"}
    for name, message in cases.items():
        with pytest.raises(FinetuneError, match=message):
            finetune(base, tmp_path / f"{name}.json", SAMPLES, tmp_path / "o.safetensors")


def test_the_command_writes_a_file_every_loader_takes(base, tmp_path, capsys):
    ann = coco_subset(tmp_path / "train.json", 1)
    weights_dir = tmp_path / "weights"
    out = weights_dir / "my_style.safetensors"
    rc = main(["finetune", "--images", str(SAMPLES), "--annotations", str(ann), "--pose", str(out.parent / "no.ckpt"),
               "--out", str(out), "--offline"])
    assert rc == 2 and capsys.readouterr().err.count("\n") == 1  # a missing base file: one line
    rc = main(["finetune", "--images", str(SAMPLES), "--annotations", str(ann), "--pose", str(base),
               "--out", str(out), "--epochs", "1", "--lambda-match", "0.00", "--offline", "--device", "cpu",
               "--val", str(ann), "--threads", "1"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    ckpt = read_checkpoint(out)  # the safetensors header the ComfyUI loader classifies by
    assert ckpt.metadata["model"] == "feat_match" and ckpt.hparams["margs"]["size"] == 32
    record = finetune_metadata(out)
    assert record["base_sha256"] and record["data_sha256"] and record["epochs"] == 1 and "pdj@0.2" in record["metrics"]
    # the CLI's pose loader: annotate with the fine-tuned file, boxes given
    rc = main(["annotate", str(SAMPLES / "megumin.png"), "--out", str(tmp_path / "ann"), "--pose", str(out),
               "--boxes", str(ann), "--skip", "segment", "--skip", "tag", "--offline", "--quiet", "--threads", "1"])
    assert rc == 0 and (tmp_path / "ann" / "megumin.pose.json").is_file()
    capsys.readouterr()
    assert main(["weights", "list", "--weights-dir", str(weights_dir)]) == 0
    listed = capsys.readouterr().out
    assert "my_style.safetensors: fine-tuned feat_match from base.safetensors" in listed
    # an index built with it shows the record (index info)
    from illustpose.retrieval import PoseIndex
    from illustpose.retrieval.ingest import weights_record

    with PoseIndex(tmp_path / "refs.sqlite", create=True) as index:
        index.record_model(weights_record(pose=out))
    assert main(["index", "info", str(tmp_path / "refs.sqlite")]) == 0
    assert "pose_finetune: fine-tuned feat_match from base.safetensors" in capsys.readouterr().out


def test_a_base_without_training_settings_and_unscorable_validation_still_train(tmp_path):
    from illustpose.finetune import FALLBACKS, _kept_by, describe

    torch.manual_seed(0)
    bare = tmp_path / "bare.safetensors"  # as another tool converts it: no margs.lr / lambda_match
    hp = {"largs": {"danbooru_coco": {"size": 64, "padding": 0.1}, "danbooru_sfw": {"size": 64}}, "margs": {"size": 32}}
    save_safetensors(bare, FeatMatchPoseNet(heatmap_size=32, trunk_input_size=64).state_dict(), model="feat_match",
                     hparams=hp)
    ann = coco_subset(tmp_path / "train.json", 1)
    lines = []
    with pytest.warns(UserWarning, match="no 'margs.lr' training setting; using 0.0001"):
        result = finetune(bare, ann, SAMPLES, tmp_path / "out.safetensors", report=lines.append,
                          config=FinetuneConfig(epochs=1, lambda_match=0.0, batch_size=1))
    assert result.history[0]["lr"] == FALLBACKS["margs.lr"]
    finetune(bare, ann, SAMPLES, tmp_path / "out.safetensors", report=lines.append,
             config=FinetuneConfig(epochs=1, lambda_match=0.0, lr=1e-4, batch_size=1))
    assert any(line.startswith("starting over:") for line in lines)  # a rerun without --resume says so
    # held-out drawings whose labels PDJ cannot use: the best epoch is chosen by a metric they can score
    assert _kept_by({"pdj@0.2": None, "pckh@0.5": None, "pckh@0.2": None, "oks@0.5": 0.3}) == "oks@0.5"
    assert _kept_by({"pdj@0.2": 0.5, "oks@0.5": 0.3}) == "pdj@0.2"
    assert "pdj@0.2 -  oks@0.5 30.0" in describe({"metrics": {"pdj@0.2": None, "oks@0.5": 0.3}})


def test_feat_concat_trains_its_head_with_the_cosine_schedule(tmp_path):
    from illustpose.models.feat_concat import FeatConcatPoseNet

    torch.manual_seed(0)
    base = tmp_path / "feat_concat.safetensors"  # random weights, Keypoint R-CNN included (rcnn.*)
    hp = {"largs": {"danbooru_coco": {"size": 64, "padding": 0.1}, "danbooru_sfw": {"size": 64}},
          "margs": {"size": 32, "lr": 0.01}}
    save_safetensors(base, FeatConcatPoseNet(heatmap_size=32, trunk_input_size=64).state_dict(), model="feat_concat",
                     hparams=hp)
    out = tmp_path / "out.safetensors"
    result = finetune(base, coco_subset(tmp_path / "a.json", 1), SAMPLES, out,
                      config=FinetuneConfig(epochs=2, batch_size=1))
    assert [h["lr"] for h in result.history] == [0.01, 0.005]  # passup.py's CosineAnnealingLR(T_max=epochs)
    before, after = tensors(base), tensors(out)
    assert before.keys() == after.keys() and any(k.startswith("rcnn.") for k in before)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("keypoint_head."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("keypoint_head."))
