"""Train the trained sample, ``samples/trained/shapes-yolov8-320.onnx``, on CPU (torch; not run in CI).

A compact YOLOv8 detector (Ultralytics 8.x ``Conv``/``C2f``/``SPPF`` backbone and PAN neck at small
widths, the v8 ``Detect`` head with DFL, ``reg_max`` 16) learns the shapes of
:mod:`onnx_headcut.synth.scenes` with Ultralytics' loss: ``TaskAlignedAssigner`` (topk 10, alpha
0.5, beta 6), BCE class loss, CIoU box loss and DFL loss, gains 7.5 / 0.5 / 1.5
(``ultralytics/utils/loss.py::v8DetectionLoss``, ``ultralytics/utils/tal.py``). Then BN is fused
into the convs and the model is exported as Ultralytics' ``Exporter`` (format='onnx') writes a
decoded YOLOv8: ``Detect.export = True``, torch's legacy exporter (``dynamo=False``), opset 18,
``onnxslim``, Ultralytics' metadata (``names`` as a dict literal, ``imgsz``, ``stride``, ``task``).

Simplifications, stated: scenes come from a fixed pool (``--pool``) re-drawn with exact
augmentations (flips, 90° turns, channel permutations) instead of mosaic/HSV/affine; AdamW with
linear warm-up and cosine decay instead of Ultralytics' optimizer heuristics; an EMA of the weights
as Ultralytics' ``ModelEMA`` with a shorter ramp (``tau`` 100 updates instead of 2000); the head's
branches are 16 channels wide (upstream: box ``max(16, ch[0] // 4, 4 * reg_max)`` = 64, class
``max(ch[0], min(nc, 100))`` = 32); training scenes are 256x256 (the shapes as large as in 320x320
scenes) to save time, the export and the test scenes are 320x320.

    python scripts/train_sample.py     # the committed sample: 816 s on a busy 2-core machine, mAP@0.5 0.851
    python scripts/train_sample.py --steps 2 --batch 2 --pool 4 --test 4 -o /tmp/smoke.onnx  # seconds
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: the package next to it

from onnx_headcut.evaluate import mean_ap, onnx_detections  # noqa: E402
from onnx_headcut.synth.scenes import CLASSES, scenes  # noqa: E402

REG_MAX = 16
STRIDES = (8, 16, 32)
SIZE = 320  # exported input and test scenes
TRAIN_SIZE = 256  # training scenes
MAX_SHAPE = SIZE // 3  # largest shape, pixels, in both

# ------------------------------------------------------------------ model (ultralytics/nn/modules/)


class Conv(nn.Module):
    """``conv.py::Conv``: Conv2d (no bias) + BatchNorm2d + SiLU; :meth:`fuse` folds the BN (``forward_fuse``)."""

    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuse(self):
        """``torch_utils.py::fuse_conv_and_bn``: one Conv2d with bias, BN gone."""
        conv, bn = self.conv, self.bn
        assert isinstance(bn, nn.BatchNorm2d)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.data = conv.weight.data * scale.detach().view(-1, 1, 1, 1)
        fused.bias.data = (bn.bias - bn.running_mean * scale).detach()
        self.conv, self.bn = fused, nn.Identity()


class Bottleneck(nn.Module):
    """``block.py::Bottleneck`` (k=(3, 3), e=1.0 as C2f builds it)."""

    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c2, 3), Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """``block.py::C2f``: split, n bottlenecks on the last half, concat all, 1x1."""

    def __init__(self, c1, c2, n=1, shortcut=False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    def forward_split(self, x):
        """``C2f.forward_split``, which Ultralytics' ``Exporter`` swaps in for ONNX (``Split`` nodes)."""
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """``block.py::SPPF`` (k=5)."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


def make_anchors(feats, strides, offset=0.5):
    """``tal.py::make_anchors``: anchor centres (grid units) and their strides."""
    points, stride_t = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[2:]
        sx = torch.arange(w, dtype=f.dtype) + offset
        sy = torch.arange(h, dtype=f.dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), s, dtype=f.dtype))
    return torch.cat(points), torch.cat(stride_t)


def dist2bbox(distance, anchor_points, xywh=True, dim=-1):
    """``tal.py::dist2bbox``."""
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchor_points - lt, anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class DFL(nn.Module):
    """``block.py::DFL``: softmax over the bins, expectation by a fixed 1x1 conv."""

    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """``head.py::Detect`` (v8 branches: Conv, Conv, Conv2d); training returns the raw maps, export the
    decoded ``(1, 4 + nc, N)`` = ``cat(dist2bbox(DFL(box), anchors, xywh) * strides, sigmoid(cls))``."""

    export = False

    def __init__(self, nc, ch, c2=16, c3=16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), REG_MAX
        self.stride = torch.tensor(STRIDES, dtype=torch.float32)
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(REG_MAX)

    def bias_init(self):
        """``Detect.bias_init`` (image size 640 in the class prior, as upstream)."""
        for a, b, s in zip(self.cv2, self.cv3, STRIDES):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def forward(self, x):
        bs = x[0].shape[0]
        boxes = torch.cat([self.cv2[i](x[i]).view(bs, 4 * REG_MAX, -1) for i in range(self.nl)], -1)
        scores = torch.cat([self.cv3[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], -1)
        if not self.export:
            return boxes, scores, x
        anchors, strides = (a.transpose(0, 1) for a in make_anchors(x, self.stride, 0.5))
        dbox = dist2bbox(self.dfl(boxes), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((dbox, scores.sigmoid()), 1)


class Model(nn.Module):
    """YOLOv8 backbone (P3–P5) + PAN neck (``yolov8.yaml`` topology) at widths ``(8, 16, 32, 48, 64)``."""

    def __init__(self, nc=len(CLASSES)):
        super().__init__()
        self.b1 = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), C2f(16, 16, 1, True),
                                Conv(16, 32, 3, 2), C2f(32, 32, 1, True))  # P3/8
        self.b2 = nn.Sequential(Conv(32, 48, 3, 2), C2f(48, 48, 1, True))  # P4/16
        self.b3 = nn.Sequential(Conv(48, 64, 3, 2), C2f(64, 64, 1, True), SPPF(64, 64))  # P5/32
        self.up = nn.Upsample(None, 2, "nearest")
        self.n4 = C2f(64 + 48, 48)
        self.n3 = C2f(48 + 32, 32)  # out P3
        self.d3 = Conv(32, 32, 3, 2)
        self.o4 = C2f(32 + 48, 48)  # out P4
        self.d4 = Conv(48, 48, 3, 2)
        self.o5 = C2f(48 + 64, 64)  # out P5
        self.detect = Detect(nc, (32, 48, 64))
        self.detect.bias_init()

    def forward(self, x):
        p3 = self.b1(x)
        p4 = self.b2(p3)
        p5 = self.b3(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        o3 = self.n3(torch.cat([self.up(n4), p3], 1))
        o4 = self.o4(torch.cat([self.d3(o3), n4], 1))
        o5 = self.o5(torch.cat([self.d4(o4), p5], 1))
        return self.detect([o3, o4, o5])

    def fuse(self):
        for m in self.modules():
            if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
                m.fuse()
        return self


# ------------------------------------------------------------------ loss (ultralytics/utils/tal.py, loss.py)


def bbox_iou(box1, box2, eps=1e-7):
    """``metrics.py::bbox_iou`` with ``xywh=False, CIoU=True``."""
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
    w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp_(0) * \
        (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp_(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = (4 / math.pi**2) * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class TaskAlignedAssigner:
    """``tal.py::TaskAlignedAssigner`` (topk 10, alpha 0.5, beta 6.0)."""

    def __init__(self, nc, topk=10, alpha=0.5, beta=6.0, eps=1e-9):
        self.nc, self.topk, self.alpha, self.beta, self.eps = nc, topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt):
        bs, n_max = gt_bboxes.shape[:2]
        mask_in = self.in_gts(anc_points, gt_bboxes)
        metric, overlaps = self.metrics(pd_scores, pd_bboxes, gt_labels, gt_bboxes, mask_in * mask_gt)
        mask_topk = self.topk_mask(metric, mask_gt.expand(-1, -1, self.topk).bool())
        mask_pos = mask_topk * mask_in * mask_gt
        # select_highest_overlaps: an anchor assigned to several boxes keeps the one it overlaps most
        fg = mask_pos.sum(-2)
        if fg.max() > 1:
            multi = (fg.unsqueeze(1) > 1).expand(-1, n_max, -1)
            best = torch.zeros_like(mask_pos).scatter_(1, overlaps.argmax(1).unsqueeze(1), 1)
            mask_pos = torch.where(multi, best, mask_pos).float()
            fg = mask_pos.sum(-2)
        gt_idx = mask_pos.argmax(-2)
        # get_targets
        flat_idx = gt_idx + torch.arange(bs)[:, None] * n_max
        labels = gt_labels.long().flatten()[flat_idx].clamp_(0)
        t_bboxes = gt_bboxes.view(-1, 4)[flat_idx]
        t_scores = nn.functional.one_hot(labels, self.nc)
        t_scores = torch.where(fg[:, :, None] > 0, t_scores, 0)
        metric = metric * mask_pos
        pos_metric = metric.amax(-1, keepdim=True)
        pos_overlaps = (overlaps * mask_pos).amax(-1, keepdim=True)
        norm = (metric * pos_overlaps / (pos_metric + self.eps)).amax(-2).unsqueeze(-1)
        return t_bboxes, t_scores * norm, fg.bool()

    def in_gts(self, xy, gt_bboxes):
        """``select_candidates_in_gts``: anchor centres strictly inside each box."""
        bs, n, _ = gt_bboxes.shape
        lt, rb = gt_bboxes.view(-1, 1, 4).chunk(2, 2)
        deltas = torch.cat((xy[None] - lt, rb - xy[None]), 2).view(bs, n, xy.shape[0], -1)
        return deltas.amin(3).gt_(self.eps)

    def metrics(self, pd_scores, pd_bboxes, gt_labels, gt_bboxes, mask_gt):
        """``get_box_metrics``: score^alpha × CIoU^beta of each (box, anchor) pair inside the box."""
        na, (bs, n) = pd_bboxes.shape[-2], gt_bboxes.shape[:2]
        mask_gt = mask_gt.bool()
        overlaps = torch.zeros((bs, n, na), dtype=pd_bboxes.dtype)
        scores = torch.zeros((bs, n, na), dtype=pd_scores.dtype)
        b = torch.arange(bs).view(-1, 1).expand(-1, n)
        scores[mask_gt] = pd_scores[b, :, gt_labels.squeeze(-1).long()][mask_gt]
        pd = pd_bboxes.unsqueeze(1).expand(-1, n, -1, -1)[mask_gt]
        gt = gt_bboxes.unsqueeze(2).expand(-1, -1, na, -1)[mask_gt]
        overlaps[mask_gt] = bbox_iou(gt, pd).squeeze(-1).clamp_(0)
        return scores.pow(self.alpha) * overlaps.pow(self.beta), overlaps

    def topk_mask(self, metrics, topk_mask):
        """``select_topk_candidates``: the top ``topk`` anchors of each box (counted once)."""
        _, idx = torch.topk(metrics, self.topk, dim=-1, largest=True)
        idx.masked_fill_(~topk_mask, 0)
        count = torch.zeros(metrics.shape, dtype=torch.int8)
        ones = torch.ones_like(idx[:, :, :1], dtype=torch.int8)
        for k in range(self.topk):
            count.scatter_add_(-1, idx[:, :, k:k + 1], ones)
        count.masked_fill_(count > 1, 0)
        return count.to(metrics.dtype)


class DetectionLoss:
    """``loss.py::v8DetectionLoss`` + ``BboxLoss`` (CIoU + DFL), gains box 7.5, cls 0.5, dfl 1.5."""

    def __init__(self, nc):
        self.nc, self.assigner = nc, TaskAlignedAssigner(nc)
        self.bce = nn.BCEWithLogitsLoss(reduction="none")
        self.proj = torch.arange(REG_MAX, dtype=torch.float)

    def __call__(self, preds, gt_labels, gt_bboxes):
        """``gt_labels`` ``(b, n, 1)``, ``gt_bboxes`` ``(b, n, 4)`` xyxy pixels (zero rows = padding)."""
        distri, scores, feats = preds
        distri, scores = distri.permute(0, 2, 1).contiguous(), scores.permute(0, 2, 1).contiguous()
        bs = scores.shape[0]
        anchors, stride_t = make_anchors(feats, STRIDES, 0.5)
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0)
        dist = distri.view(bs, -1, 4, REG_MAX).softmax(3).matmul(self.proj)
        pd_bboxes = dist2bbox(dist, anchors, xywh=False)
        t_bboxes, t_scores, fg = self.assigner(scores.detach().sigmoid(), pd_bboxes.detach() * stride_t,
                                               anchors * stride_t, gt_labels, gt_bboxes, mask_gt)
        t_sum = max(t_scores.sum(), 1)
        loss = torch.zeros(3)
        loss[1] = self.bce(scores, t_scores.to(scores.dtype)).sum() / t_sum
        if fg.sum():
            t_bboxes = t_bboxes / stride_t
            weight = t_scores.sum(-1)[fg].unsqueeze(-1)
            iou = bbox_iou(pd_bboxes[fg], t_bboxes[fg])
            loss[0] = ((1.0 - iou) * weight).sum() / t_sum
            lt, rb = t_bboxes.chunk(2, -1)  # bbox2dist
            target = torch.cat((anchors - lt, rb - anchors), -1).clamp_(0, REG_MAX - 1 - 0.01)[fg]
            pred = distri[fg].view(-1, REG_MAX)
            tl = target.long()
            wl = tl + 1 - target
            dfl = (nn.functional.cross_entropy(pred, tl.view(-1), reduction="none").view(tl.shape) * wl
                   + nn.functional.cross_entropy(pred, (tl + 1).view(-1), reduction="none").view(tl.shape) * (1 - wl))
            loss[2] = (dfl.mean(-1, keepdim=True) * weight).sum() / t_sum
        loss = loss * torch.tensor([7.5, 0.5, 1.5])
        return loss.sum() * bs, loss.detach()


# ------------------------------------------------------------------ data, training, export


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


def batch(rng, pool, n):
    """A training batch: images ``(n, 3, h, w)`` in 0–1, labels ``(n, m, 1)``, boxes ``(n, m, 4)``."""
    picks = [pool[i] for i in rng.integers(0, len(pool), n)]
    m = max(1, max(len(s.classes) for s in picks))
    imgs = np.zeros((n, 3, *picks[0].image.shape[:2]), np.float32)
    labels, boxes = np.zeros((n, m, 1), np.float32), np.zeros((n, m, 4), np.float32)
    for i, s in enumerate(picks):
        im, b = augment(rng, s.image, s.boxes)
        imgs[i] = im.transpose(2, 0, 1) / 255.0
        labels[i, :len(b), 0], boxes[i, :len(b)] = s.classes, b
    return torch.from_numpy(imgs), torch.from_numpy(labels), torch.from_numpy(boxes)


def export(model: nn.Module, path: Path, opset: int = 18) -> Path:
    """Fuse, then export as Ultralytics' ``Exporter`` does (legacy exporter, onnxslim, metadata)."""
    import onnx

    model = copy.deepcopy(model).fuse().eval()
    for p in model.parameters():
        p.requires_grad = False
    model.detect.export = True
    for m in model.modules():
        if isinstance(m, C2f):
            m.forward = m.forward_split  # type: ignore[method-assign]
    im = torch.zeros(1, 3, SIZE, SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            model(im)  # dry runs
        torch.onnx.export(model, im, str(path), verbose=False, opset_version=opset, do_constant_folding=True,
                          input_names=["images"], output_names=["output0"], dynamo=False)
    m = onnx.load(str(path))
    try:
        import onnxslim

        m = onnxslim.slim(m)
    except ImportError:
        pass
    meta = {"description": "onnx_headcut trained sample: YOLOv8-style detector of synthetic shapes",
            "author": "onnx_headcut scripts/train_sample.py", "stride": max(STRIDES), "task": "detect", "batch": 1,
            "imgsz": [SIZE, SIZE], "names": dict(enumerate(CLASSES)), "channels": 3, "end2end": False}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))
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


def train(steps, batch_size, pool_size, seed, lr, log=print):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    pool = list(scenes(seed, pool_size, (TRAIN_SIZE, TRAIN_SIZE), max_size=MAX_SHAPE))
    log(f"pool: {pool_size} scenes in {time.time() - t0:.1f} s")
    model = Model()
    loss_fn = DetectionLoss(len(CLASSES))
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
        imgs, labels, boxes = batch(rng, pool, batch_size)
        total, parts = loss_fn(model(imgs), labels, boxes)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        ema.update(model)
        running = parts if running is None else 0.95 * running + 0.05 * parts
        if step % 20 == 0 or step == steps - 1:
            box, cls, dfl = running.tolist()
            log(f"step {step + 1}/{steps}  loss box {box:.3f} cls {cls:.3f} dfl {dfl:.3f}  "
                f"lr {sched.get_last_lr()[0]:.5f}  {time.time() - t0:.0f} s")
    return ema.ema, running, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("samples/trained/shapes-yolov8-320.onnx"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pool", type=int, default=600, help="scenes generated once and augmented")
    ap.add_argument("--test", type=int, default=200, help="held-out scenes (another seed) for mAP@0.5")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.006)
    ap.add_argument("--weights", type=Path, help="skip training: export and measure these saved weights")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 spin-wait on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log = lambda s: print(s, flush=True)
    if args.weights:
        model = Model()
        model.load_state_dict(torch.load(args.weights))
    else:
        model, parts, seconds = train(args.steps, args.batch, args.pool, args.seed, args.lr, log)
        torch.save(model.state_dict(), args.output.with_suffix(".pt"))
        log(f"trained in {seconds:.0f} s; final loss box {parts[0]:.3f} cls {parts[1]:.3f} dfl {parts[2]:.3f}")
    export(model, args.output)
    test = list(scenes(args.seed + 1_000_000, args.test, (SIZE, SIZE), max_size=MAX_SHAPE))
    m, per_class = mean_ap(onnx_detections(args.output, (s.image for s in test)),
                           ((s.boxes, s.classes) for s in test), len(CLASSES))
    log(f"mAP@0.5 on {args.test} held-out scenes: {m:.3f}  per class: "
        + ", ".join(f"{n} {a:.3f}" for n, a in zip(CLASSES, per_class)))
    log(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
