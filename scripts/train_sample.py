"""Train the trained samples, ``samples/trained/shapes-*-320.onnx``, on CPU (torch; not run in CI).

A compact detector (Ultralytics 8.x ``Conv``/``C2f``/``SPPF`` backbone and PAN neck at small widths,
``train_models.py``) with one of three upstream heads learns the shapes of
:mod:`onnx_headcut.synth.scenes` with that head's loss (``train_losses.py``), then BN is fused into the
convs and the model is exported as that head's project exports a decoded model, through torch's legacy
exporter (``dynamo=False``):

- ``--head v8`` (``shapes-yolov8-320.onnx``): Ultralytics ``Detect`` with DFL, ``reg_max`` 16; Ultralytics'
  ``v8DetectionLoss`` (TaskAlignedAssigner, BCE, CIoU, DFL); exported as Ultralytics' ``Exporter``
  (format='onnx'): ``Detect.export = True``, ``C2f.forward_split``, opset 18, ``onnxslim``, Ultralytics'
  metadata (``names`` as a dict literal, ``imgsz``, ``stride``, ``task``); ``(1, 4 + nc, N)``.
- ``--head yolox`` (``shapes-yolox-320.onnx``): YOLOX 0.3.0 ``YOLOXHead``; YOLOX's loss terms with the
  TaskAlignedAssigner in place of SimOTA (see ``train_losses.py``); YOLOX's input (BGR, 0-255, image at
  the top left); exported as ``tools/export_onnx.py --decode_in_inference``: opset 11, 'images' ->
  'output', onnxsim; ``(1, N, 5 + nc)``.
- ``--head v5`` (``shapes-yolov5-320.onnx``): YOLOv5 v7.0 ``Detect`` (default anchors); YOLOv5's
  ``ComputeLoss``; exported as ``export.py --include onnx``: opset 12, 'images' -> 'output0', metadata
  ``stride`` and ``names``; ``(1, 3N, 5 + nc)``.

Simplifications, stated: all three use the YOLOv8 backbone and neck (the heads are upstream's; the
backbone does not reach the decode); scenes come from a fixed pool (``--pool``) re-drawn with exact
augmentations (flips, 90° turns, channel permutations) instead of mosaic/HSV/affine; AdamW with
linear warm-up and cosine decay instead of each project's optimizer heuristics; an EMA of the weights
as Ultralytics' ``ModelEMA`` with a shorter ramp (``tau`` 100 updates instead of 2000); the heads'
branches are 16 channels wide (upstream v8: box 64, class 32; YOLOX-nano: 64); training scenes are
256x256 (the shapes as large as in 320x320 scenes) to save time, the export and the test scenes are 320x320.

    python scripts/train_sample.py                # v8: 816 s on a busy 2-core machine, mAP@0.5 0.851
    python scripts/train_sample.py --head yolox   # 2274 s with 8 jobs on 2 cores (3.6 CPU-min), mAP@0.5 0.814
    python scripts/train_sample.py --head v5      # 1950 s with 8 jobs on 2 cores (3.1 CPU-min), mAP@0.5 0.415
    python scripts/train_sample.py --head v5 --steps 2 --batch 2 --pool 4 --test 4 -o /tmp/smoke.onnx  # seconds
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout: the package next to it
sys.path.insert(0, str(HERE))

from train_losses import LOSSES  # noqa: E402
from train_models import STRIDES, V5_ANCHORS, C2f, Model, yolox_export_head  # noqa: E402

from onnx_headcut.evaluate import head_detections, mean_ap, onnx_detections  # noqa: E402
from onnx_headcut.preprocess import ULTRALYTICS, YOLOX, Preprocess  # noqa: E402
from onnx_headcut.synth.scenes import CLASSES, scenes  # noqa: E402

SIZE = 320  # exported input and test scenes
TRAIN_SIZE = 256  # training scenes
MAX_SHAPE = SIZE // 3  # largest shape, pixels, in both
#: each head kind: output file, the input its project feeds (preprocess), default seed
KINDS = {"v8": ("shapes-yolov8-320.onnx", ULTRALYTICS), "yolox": ("shapes-yolox-320.onnx", YOLOX),
         "v5": ("shapes-yolov5-320.onnx", ULTRALYTICS)}


def augment(rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray):
    """Exact augmentations: horizontal/vertical flips, a 90° turn, a channel permutation."""
    h, w = image.shape[:2]
    b = boxes.copy()
    if rng.random() < 0.5:
        image, b[:, [0, 2]] = image[:, ::-1], w - b[:, [2, 0]]
    if rng.random() < 0.5:
        image, b[:, [1, 3]] = image[::-1], h - b[:, [3, 1]]
    if rng.random() < 0.5:  # transpose: x <-> y
        image, b = image.transpose(1, 0, 2), b[:, [1, 0, 3, 2]]
    return image[..., rng.permutation(3)], b


def batch(rng, pool, n, pre: Preprocess = ULTRALYTICS):
    """A training batch: images ``(n, 3, h, w)`` as ``pre`` feeds them, labels ``(n, m, 1)``, boxes ``(n, m, 4)``."""
    picks = [pool[i] for i in rng.integers(0, len(pool), n)]
    m = max(1, max(len(s.classes) for s in picks))
    imgs = np.zeros((n, 3, *picks[0].image.shape[:2]), np.float32)
    labels, boxes = np.zeros((n, m, 1), np.float32), np.zeros((n, m, 4), np.float32)
    for i, s in enumerate(picks):
        im, b = augment(rng, s.image, s.boxes)
        im = im[..., ::-1] if pre.channels == "bgr" else im
        imgs[i] = im.transpose(2, 0, 1) * np.float32(pre.scale)
        labels[i, :len(b), 0], boxes[i, :len(b)] = s.classes, b
    return torch.from_numpy(imgs), torch.from_numpy(labels), torch.from_numpy(boxes)


def best_possible_recall(pool, anchors=V5_ANCHORS, thr=4.0) -> float:
    """YOLOv5 ``check_anchors``' best possible recall of ``anchors`` on the pool's boxes (>= 0.98: kept)."""
    wh = np.concatenate([s.boxes[:, 2:] - s.boxes[:, :2] for s in pool])
    a = np.asarray(anchors, np.float32).reshape(-1, 2)
    r = wh[:, None] / a[None]
    best = np.minimum(r, 1 / r).min(2).max(1)
    return float((best > 1 / thr).mean())


def _finish(path: Path, slim: str, meta: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    if slim == "onnxslim":
        import onnxslim

        m = onnxslim.slim(m)
    elif slim == "onnxsim":
        import onnxsim

        m, ok = onnxsim.simplify(m)
        assert ok, "onnxsim could not validate the simplified model"
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))


def export(model: Model, path: Path) -> Path:
    """Fuse, then export as the head's project exports a decoded model (see the module docstring)."""
    kind = model.kind
    model = copy.deepcopy(model).fuse().eval()
    for p in model.parameters():
        p.requires_grad = False
    model.detect.export = True
    im = torch.zeros(1, 3, SIZE, SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = dict(enumerate(CLASSES))
    if kind == "v8":
        for m in model.modules():
            if isinstance(m, C2f):
                m.forward = m.forward_split  # type: ignore[method-assign]
        opset, io, slim = 18, ("images", "output0"), "onnxslim"
        meta = {"description": "onnx_headcut trained sample: YOLOv8-style detector of synthetic shapes",
                "author": "onnx_headcut scripts/train_sample.py", "stride": max(STRIDES), "task": "detect",
                "batch": 1, "imgsz": [SIZE, SIZE], "names": names, "channels": 3, "end2end": False}
    elif kind == "yolox":
        model.detect = yolox_export_head(model.detect)
        opset, io, slim, meta = 11, ("images", "output"), "onnxsim", {}
    else:
        opset, io, slim, meta = 12, ("images", "output0"), "", {"stride": max(STRIDES), "names": names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2 if kind != "yolox" else 0):
            model(im)  # dry runs (Ultralytics, YOLOv5; YOLOX's export_onnx.py has none)
        torch.onnx.export(model, im, str(path), verbose=False, opset_version=opset, do_constant_folding=True,
                          input_names=[io[0]], output_names=[io[1]], dynamo=False)
    _finish(path, slim, meta)
    return path


class EMA:
    """``torch_utils.py::ModelEMA`` (decay 0.9999 × (1 − exp(−updates / tau))); frozen parameters (the DFL
    conv's 0..15) are not averaged, as averaging equal values can move them by an ulp."""

    def __init__(self, model, decay=0.9999, tau=100):
        self.ema = copy.deepcopy(model).eval()
        self.frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        self.updates, self.decay, self.tau = 0, decay, tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point and k not in self.frozen:
                v *= d
                v += (1 - d) * msd[k].detach()


def train(kind, steps, batch_size, pool_size, seed, lr, log=print):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    pool = list(scenes(seed, pool_size, (TRAIN_SIZE, TRAIN_SIZE), max_size=MAX_SHAPE))
    log(f"pool: {pool_size} scenes in {time.time() - t0:.1f} s")
    if kind == "v5":
        log(f"YOLOv5 default anchors: best possible recall {best_possible_recall(pool):.4f} (>= 0.98: kept)")
    pre = KINDS[kind][1]
    model = Model(len(CLASSES), kind)
    loss_fn = LOSSES[kind](len(CLASSES), model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.937, 0.999))
    warm = max(1, min(100, steps // 10))
    cosine = lambda i: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1) / warm if i < warm else cosine(i))
    ema = EMA(model)
    model.train()
    running = None
    for step in range(steps):
        imgs, labels, boxes = batch(rng, pool, batch_size, pre)
        total, parts = loss_fn(model(imgs), labels, boxes)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        ema.update(model)
        running = parts if running is None else 0.95 * running + 0.05 * parts
        if step % 20 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}  loss " + " ".join(f"{n} {v:.3f}" for n, v in zip(loss_fn.names, running))
                + f"  lr {sched.get_last_lr()[0]:.5f}  {time.time() - t0:.0f} s")
    return ema.ema, loss_fn.names, running, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", choices=tuple(KINDS), default="v8")
    ap.add_argument("-o", "--output", type=Path, help="default: samples/trained/shapes-<head>-320.onnx")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pool", type=int, default=600, help="scenes generated once and augmented")
    ap.add_argument("--test", type=int, default=200, help="held-out scenes (another seed) for mAP@0.5")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.006)
    ap.add_argument("--weights", type=Path, help="skip training: export and measure these saved weights")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 spin-wait on a busy machine)")
    args = ap.parse_args(argv)
    output = args.output or Path("samples/trained") / KINDS[args.head][0]
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log = lambda s: print(s, flush=True)
    if args.weights:
        model = Model(len(CLASSES), args.head)
        model.load_state_dict(torch.load(args.weights))
    else:
        model, names, parts, seconds = train(args.head, args.steps, args.batch, args.pool, args.seed, args.lr, log)
        torch.save(model.state_dict(), output.with_suffix(".pt"))
        log(f"trained in {seconds:.0f} s; final loss " + " ".join(f"{n} {v:.3f}" for n, v in zip(names, parts)))
    export(model, output)
    test = list(scenes(args.seed + 1_000_000, args.test, (SIZE, SIZE), max_size=MAX_SHAPE))
    dets = (onnx_detections if args.head == "v8" else head_detections)(output, (s.image for s in test))
    m, per_class = mean_ap(dets, ((s.boxes, s.classes) for s in test), len(CLASSES))
    log(f"mAP@0.5 on {args.test} held-out scenes: {m:.3f}  per class: "
        + ", ".join(f"{n} {a:.3f}" for n, a in zip(CLASSES, per_class)))
    log(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
