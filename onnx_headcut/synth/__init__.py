"""Generate small decoded YOLO exports with the node patterns of the upstream exporters.

These are the project's fixtures and samples: random weights, tiny widths, real structure. Each
generator writes the decode region node for node as the upstream export writes it (checked
against genuine exports in the test suite): :mod:`.yolov6` (0.1.0 and anchor-free),
:mod:`.yolov5` (YOLOv5 and YOLOv7), :mod:`.yolov8` (Ultralytics), :mod:`.yolo26` (YOLO26 and
YOLOv10, one-to-many and NMS-free top-k), :mod:`.ultralytics_tasks` (YOLOv8 -pose and -obb), :mod:`.yolox`;
:mod:`.end2end`
wraps any of them in an NMS; :mod:`.samples` lists the bundled samples.
"""

from .end2end import end2end
from .samples import FAMILIES, SAMPLES, write_samples
from .ultralytics_tasks import yolov8_obb, yolov8_pose
from .yolo26 import yolo26, yolov10
from .yolov5 import yolov5
from .yolov6 import yolov6_af, yolov6_v1
from .yolov8 import yolov8
from .yolox import yolox

__all__ = ["FAMILIES", "SAMPLES", "end2end", "write_samples", "yolo26", "yolov10",
           "yolov5", "yolov6_af", "yolov6_v1", "yolov8", "yolov8_obb", "yolov8_pose", "yolox"]
