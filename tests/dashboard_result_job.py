"""A short batch job with the outputs the job viewer knows (for the dashboard's page and browser tests).

It makes an implant phantom with ground truth, sweeps the watershed baseline's marker
fraction while appending one JSON-lines metrics record per step (loss = 1 - mean Dice,
Dice per class, like a training job), and writes the best segmentation with an
uncertainty map (the normalised gradient magnitude: high at class boundaries).
"""

RESULT_SCRIPT = """
import json
import time

import numpy as np
from scipy import ndimage

from unified_framework.classical import majority_order, relabel, watershed_classes
from unified_framework.data.phantom import CLASS_NAMES, make_implant_phantom
from unified_framework.io import write_volume
from unified_framework.metrics import score_volumes

PAUSE_S = 1.0  # between steps: lets a browser watch the curves grow while the job runs
image, truth = make_implant_phantom((32, 64, 64), seed=4)
write_volume("scan.tif", image, spacing=(5, 5, 5))
write_volume("scan_gt.tif", truth, spacing=(5, 5, 5))
with open("dataset.json", "w") as info:
    json.dump({"class_names": list(CLASS_NAMES)}, info)
best = None
with open("metrics.jsonl", "w") as metrics:
    for step, fraction in enumerate(np.linspace(0.1, 0.9, 9), start=1):
        ranked = watershed_classes(image, classes=5, marker_fraction=float(fraction))
        labels = relabel(ranked, majority_order(ranked, truth, 5))
        dice = score_volumes(labels, truth, labels=[1, 2, 3], surface=False)["dice"].fillna(0).tolist()
        loss = 1 - float(np.mean(dice))
        metrics.write(json.dumps({"step": step, "loss": loss, "marker_fraction": float(fraction),
                                  "dice": {"bone": dice[0], "implant": dice[1], "layer": dice[2]}}) + "\\n")
        metrics.flush()
        if best is None or loss < best[0]:
            best = (loss, labels)
        time.sleep(PAUSE_S)
write_volume("prediction.tif", best[1], spacing=(5, 5, 5))
edges = ndimage.gaussian_gradient_magnitude(image, 1.0)
write_volume("prediction_entropy.tif", (edges / edges.max()).astype(np.float32), spacing=(5, 5, 5))
print(f"results written; best loss {best[0]:.3f}")
"""


def result_script(pause_s: float) -> str:
    """The job's script with ``pause_s`` seconds between steps (0 where nothing watches it run)."""
    return RESULT_SCRIPT.replace("PAUSE_S = 1.0", f"PAUSE_S = {float(pause_s)!r}", 1)
