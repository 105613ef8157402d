"""Danbooru Tag: a caption of Danbooru tags for each image."""

from __future__ import annotations

import json

from illustpose.outputs import select_tags

from ._api import TAGGER, io
from ._common import each_image, on_device, reports_errors, transparency_input


class DanbooruTag(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DanbooruTag|illustpose",
            display_name="Danbooru Tag (illustpose)",
            category="illustpose",
            description="Tags each illustration with the Danbooru tagger of bizarre-pose-estimator "
                        "(reference danbooru_tagger.py) and writes a comma-separated caption per image, also "
                        "shown on the node.",
            is_output_node=True,  # runs even with nothing connected: the captions show on the node
            inputs=[
                io.Image.Input("image", tooltip="Illustrations to tag, any size."),
                TAGGER.Input("tagger", tooltip="From Load Danbooru Tagger."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Keep tags whose score is at least this (0.5 as the reference)."),
                io.String.Input("exclude_tags", default="", multiline=False, placeholder="e.g. solo, simple background",
                                tooltip="Comma-separated tags to leave out (case, spaces and underscores ignored)."),
                io.Boolean.Input("replace_underscores", default=True, tooltip=(
                    "Write 'long hair' instead of 'long_hair' (the reference captioner's default).")),
                io.Boolean.Input("sort_by_score", default=True,
                                 tooltip="Highest score first; off keeps the tagger's own tag order."),
                io.Int.Input("max_tags", default=0, min=0, max=1000,
                             tooltip="Keep at most this many tags (0 = no limit)."),
                transparency_input(),
            ],
            outputs=[
                io.String.Output(display_name="tags", is_output_list=True, tooltip=(
                    "One caption per image, tags joined by ', ' (a list: nodes after it run once per image).")),
                io.String.Output(display_name="scores_json", tooltip=(
                    "JSON list with one {tag: score} object per image, the kept tags only.")),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, image, tagger, threshold, exclude_tags, replace_underscores, sort_by_score, max_tags,
                transparency=None):
        with on_device(tagger):
            results, messages = each_image(lambda im, i: tagger.tag([im])[0], image, transparency,
                                           node="Danbooru Tag")
        kept = [[] if r is None else select_tags(r, threshold, exclude_tags, replace_underscores, sort_by_score,
                                                 max_tags) for r in results]
        captions = [", ".join(n for n, _ in k) for k in kept]
        # an image that failed: an empty caption, and its message where the UI shows the caption
        failed = iter(messages)
        shown = [next(failed) if r is None else c for r, c in zip(results, captions)]
        return io.NodeOutput(captions, json.dumps([dict(k) for k in kept]), ui={"text": shown})


NODES = [DanbooruTag]
