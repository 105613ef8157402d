"""Network architectures, one per file (torchvision building blocks, Lightning key names)."""
