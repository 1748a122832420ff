"""Run one of nnU-Net v2's console commands in this interpreter: ``python -m ... NAME ARGS``.

torch is imported first: a process that later imports TensorFlow must have loaded
torch (and triton) before it (see docs/nnunet.md, "TensorFlow").
"""

from __future__ import annotations

import importlib
import os
import sys

ENTRY_POINTS = {
    "nnUNetv2_plan_and_preprocess": "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_and_preprocess_entry",
    "nnUNetv2_train": "nnunetv2.run.run_training:run_training_entry",
    "nnUNetv2_predict_from_modelfolder": "nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder",
}


def main() -> None:
    """Call the entry point named by ``sys.argv[1]`` with the remaining arguments."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    name = sys.argv[1]
    module, function = ENTRY_POINTS[name].split(":")
    sys.argv = [name, *sys.argv[2:]]
    getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    main()
