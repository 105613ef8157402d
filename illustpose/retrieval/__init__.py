"""Pose reference index: find illustrations whose pose resembles a query (issue 4).

The reference (``_scripts/pose_retrieval.py``, the paper's section H) searches a fixed
Danbooru set through a pickled scikit-learn ``NearestNeighbors``; this package indexes your
own collections in one SQLite file and searches them by image or by pose:

* :mod:`.descriptor`: the reference's descriptor (pairwise joint distances in the pose crop
  frame), its mirror, and :class:`PoseKeypoints`, the pose record;
* :mod:`.search`: exact k-nearest-neighbour search (mirror-aware, partial poses);
* :mod:`.store`: :class:`PoseIndex`, the SQLite file (add / query / info / export);
* :mod:`.cli`: the ``python -m illustpose index ...`` commands.

Example::

    from illustpose.retrieval import PoseIndex, IndexEntry
    with PoseIndex("refs.sqlite", create=True) as index:
        index.add([IndexEntry.from_pose_result(result, "art/001.png")])
        for hit in index.query(other_result, k=5, mirror=True):
            print(hit.rank, f"{hit.distance:.2f}", hit.source)
"""

from .descriptor import (
    DESCRIPTOR_KINDS,
    DescriptorKind,
    PoseKeypoints,
    descriptor_kind,
    mirror_descriptors,
    pair_mask,
    pose_descriptors,
)
from .search import BACKENDS, DEFAULT_MIN_JOINTS, DescriptorSearch, SearchResult
from .store import AddResult, Hit, IndexEntry, PoseIndex, StoredEntry

__all__ = [
    "DESCRIPTOR_KINDS",
    "DescriptorKind",
    "PoseKeypoints",
    "descriptor_kind",
    "mirror_descriptors",
    "pair_mask",
    "pose_descriptors",
    "BACKENDS",
    "DEFAULT_MIN_JOINTS",
    "DescriptorSearch",
    "SearchResult",
    "AddResult",
    "Hit",
    "IndexEntry",
    "PoseIndex",
    "StoredEntry",
]
