"""Training: the model-agnostic loop and everything around it.

* :mod:`~multitower.train.trainer`: :class:`Trainer` and :class:`TrainConfig`;
* :mod:`~multitower.train.task`: the task layer (batch -> :class:`LossOutput`);
* :mod:`~multitower.train.optim`: AdamW parameter groups, warmup + cosine schedule;
* :mod:`~multitower.train.data`: deterministic sharded batches, bad-record skipping;
* :mod:`~multitower.train.checkpoint`: atomic, verified, resumable checkpoints;
* :mod:`~multitower.train.distributed`: torchrun, DDP/FSDP2, ``all_gather_with_grad``;
* :mod:`~multitower.train.logger`, :mod:`~multitower.train.progress`: metrics.jsonl, progress bar;
* :mod:`~multitower.experiments.recipes`: named builders of (model, task, dataset, collate).
"""
