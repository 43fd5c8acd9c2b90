"""The one training loop (LM pretraining and MAD runs both use it).

* `grid.train.loop.train(model, optimizer, task, ...) -> TrainResult`: step-based core (eval, early stop, divergence guard,
  grad accumulation, bf16 autocast on CUDA, checkpoint save/restore that reproduces a straight run).
* `grid.train.optim`: AdamW param groups (decay-all for MAD, no-decay exemptions for LM) and lr
  schedules (`CosinePerEpoch` for MAD, `WarmupCosine` for LM, `Constant`).
* `grid.train.task`: `TrainTask`, what a run hands the loop (batches, loss, lr, evaluation), and
  `run_fields`, the row fields every suite's run shares.
* `grid.train.checkpoint`: `DirCheckpointer`, `MemoryCheckpointer`, RNG state capture.
"""
from grid.train.checkpoint import Checkpointer, DirCheckpointer, MemoryCheckpointer
from grid.train.loop import TrainResult, train
from grid.train.optim import Constant, CosinePerEpoch, WarmupCosine, build_adamw, param_groups
from grid.train.task import SimpleTask, TrainTask, run_fields

__all__ = ["Checkpointer", "Constant", "CosinePerEpoch", "DirCheckpointer", "MemoryCheckpointer", "SimpleTask",
           "TrainResult", "TrainTask", "WarmupCosine", "build_adamw", "param_groups", "run_fields", "train"]
