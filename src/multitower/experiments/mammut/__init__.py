"""MaMMUT on images: joint contrastive + captioning training, retrieval, captioning and VQA evaluation."""
