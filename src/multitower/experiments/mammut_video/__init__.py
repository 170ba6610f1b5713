"""The ``mammut_video`` recipe: MaMMUT on clips, sparse tubes against per-frame encoding."""
