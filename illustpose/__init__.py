"""illustpose: the illustrated-character models of Chen & Zwicker (WACV 2022) as a library.

Segmenter (character mask + bbox), Danbooru tagger, and pose estimator (COCO-17 keypoints),
ported faithfully from the reference implementation "bizarre-pose-estimator".
"""

__version__ = "0.1.0"
