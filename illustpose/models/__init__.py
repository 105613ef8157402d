"""One module per architecture: its network (torchvision building blocks, Lightning key names), its
builder ``build(checkpoint, weights)`` and, per task, its detector class.  Which module holds which
model is the registry's to say (:mod:`illustpose.registry`)."""
