"""The names and addresses of the released files, written out for the tests (independently of the registry), and going online in a test."""

HF_REPO = "public-data/bizarre-pose-estimator-models"
DRIVE = "https://drive.google.com/drive/folders/11bw47Vy-RPKjgd6yF0RzcXALvp7zB_wt"
TAGGER_CKPT = ("_train/danbooru_tagger/runs/waning_kate_vulcan0001/checkpoints/"
               "epoch=0022-val_f2=0.4461-val_loss=0.0766.ckpt")
SEG_CKPT = ("_train/character_bg_seg/runs/eyeless_alaska_vulcan0000/checkpoints/"
            "epoch=0096-val_f1=0.9508-val_loss=0.0483.ckpt")
RULES = "_data/danbooru/_filters/intently_combatively_rules.json"
POSE = "_train/character_pose_estim/runs/"
#: every member of bizarre_pose_models.zip that illustpose knows
MEMBERS = [TAGGER_CKPT, SEG_CKPT, RULES] + [
    POSE + n + ".ckpt" for n in ("feat_match", "feat_match+data", "feat_concat", "feat_concat+data")
]


def go_online(monkeypatch) -> None:
    """For a test: online (``HF_HUB_OFFLINE`` unset, also in huggingface_hub's constants), with every
    host answering the reachability probe (the tests mock the downloads themselves)."""
    from huggingface_hub import constants

    from illustpose import weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights, "_unreachable", lambda url, hosts: None)
