"""What converters and generators share: the nnUNet_raw dataset folder and its atomic writing,
splits, per-case metadata (cases.json) and 2D image reading."""
