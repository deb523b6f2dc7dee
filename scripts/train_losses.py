"""The trained samples' losses, one per head kind of ``train_models.py`` (torch; not part of the package).

- ``v8``: Ultralytics ``loss.py::v8DetectionLoss`` + ``BboxLoss``: ``tal.py::TaskAlignedAssigner`` (topk
  10, alpha 0.5, beta 6), BCE class loss, CIoU box loss, DFL loss, gains 7.5 / 0.5 / 1.5.
- ``yolox``: YOLOX's loss terms (``yolo_head.py::get_losses``: box IoU loss × 5.0, BCE objectness on every
  anchor against the foreground mask, BCE class loss on the foreground against one-hot × IoU of the
  prediction, all over the foreground count) with one stated simplification: the positives come from
  the same ``TaskAlignedAssigner`` (on ``sigmoid(obj) · sigmoid(cls)`` and the decoded boxes; YOLOv6
  ≥ 0.2 replaced SimOTA by it too) instead of SimOTA, and the IoU loss is ``1 - CIoU`` (YOLOX: ``1 -
  IoU²``); no L1 term (YOLOX adds it only for the last 15 epochs).
- ``v5``: YOLOv5 v7.0 ``utils/loss.py::ComputeLoss`` as it is: ``build_targets`` (anchor ratio < 4, the
  cell and its two nearest neighbours), CIoU box loss, BCE objectness against the IoU (``gr`` 1),
  BCE class loss, level balance 4.0 / 1.0 / 0.4, gains box 0.05, obj 1.0 × (imgsz / 640)², cls 0.5 ×
  nc / 80 (``train.py`` scales them so).

Every loss takes ``(preds, gt_labels (B, M, 1), gt_bboxes (B, M, 4) xyxy pixels, zero rows = padding)``
and returns ``(total × batch, parts)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from train_models import REG_MAX, STRIDES, dist2bbox, make_anchors


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


def xywh2xyxy(b):
    xy, wh = b[..., :2], b[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


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


class V8Loss:
    """``loss.py::v8DetectionLoss`` + ``BboxLoss`` (CIoU + DFL), gains box 7.5, cls 0.5, dfl 1.5."""

    names = ("box", "cls", "dfl")

    def __init__(self, nc, model=None):
        self.nc, self.assigner = nc, TaskAlignedAssigner(nc)
        self.bce = nn.BCEWithLogitsLoss(reduction="none")
        self.proj = torch.arange(REG_MAX, dtype=torch.float)

    def __call__(self, preds, gt_labels, gt_bboxes):
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


class YOLOXLoss:
    """YOLOX's IoU / obj / cls terms (reg weight 5.0, over the foreground count), positives from
    :class:`TaskAlignedAssigner` (see the module docstring)."""

    names = ("iou", "obj", "cls")

    def __init__(self, nc, model=None):
        self.nc, self.assigner = nc, TaskAlignedAssigner(nc)
        self.bce = nn.BCEWithLogitsLoss(reduction="none")

    def __call__(self, preds, gt_labels, gt_bboxes):
        raw, feats = preds
        bs = raw.shape[0]
        centres, stride_t = make_anchors(feats, STRIDES, 0.5)  # cell centres (grid + 0.5), grid units
        grid, stride_t = centres - 0.5, stride_t
        xy = (raw[..., :2] + grid) * stride_t
        wh = torch.exp(raw[..., 2:4].clamp(max=8.0)) * stride_t  # clamp: no inf while the head is untrained
        boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1)
        obj, cls = raw[..., 4], raw[..., 5:]
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0)
        scores = (cls.detach().sigmoid() * obj.detach().sigmoid()[..., None])
        t_bboxes, _, fg = self.assigner(scores, boxes.detach(), centres * stride_t, gt_labels, gt_bboxes, mask_gt)
        num_fg = max(float(fg.sum()), 1.0)
        loss = torch.zeros(3)
        loss[1] = self.bce(obj, fg.to(obj.dtype)).sum() / num_fg
        if fg.sum():
            iou = bbox_iou(boxes[fg], t_bboxes[fg]).squeeze(-1)
            loss[0] = (1.0 - iou).sum() / num_fg
            labels = self._labels(gt_labels, gt_bboxes, t_bboxes, fg)
            target = nn.functional.one_hot(labels, self.nc).to(cls.dtype) * iou.detach().clamp(0)[:, None]
            loss[2] = self.bce(cls[fg], target).sum() / num_fg
        loss = loss * torch.tensor([5.0, 1.0, 1.0])
        return loss.sum() * bs, loss.detach()

    @staticmethod
    def _labels(gt_labels, gt_bboxes, t_bboxes, fg):
        """The class of the ground-truth box each foreground anchor was given (found by its box)."""
        same = (t_bboxes[:, :, None, :] == gt_bboxes[:, None, :, :]).all(-1)  # (B, N, M)
        return gt_labels[..., 0].long().gather(1, same.float().argmax(-1))[fg]


class V5Loss:
    """YOLOv5 v7.0 ``ComputeLoss`` (``build_targets`` + CIoU / obj / cls), gains as ``train.py`` sets them."""

    names = ("box", "obj", "cls")

    def __init__(self, nc, model, imgsz=256, anchor_t=4.0):
        det = model.detect
        self.nc, self.na, self.nl, self.anchors, self.anchor_t = nc, det.na, det.nl, det.anchors, anchor_t
        self.balance = (4.0, 1.0, 0.4)
        scale = 3 / self.nl
        self.gains = torch.tensor([0.05 * scale, 1.0 * (imgsz / 640) ** 2 * scale, 0.5 * nc / 80 * scale])
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, p, gt_labels, gt_bboxes):
        bs, h, w = p[0].shape[0], p[0].shape[2] * STRIDES[0], p[0].shape[3] * STRIDES[0]
        keep = gt_bboxes.sum(-1) > 0
        img = torch.arange(bs)[:, None].expand_as(keep)[keep].float()
        b = gt_bboxes[keep]
        scale = torch.tensor([w, h, w, h], dtype=b.dtype)
        xywh = torch.cat(((b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]), 1) / scale
        targets = torch.cat((img[:, None], gt_labels[keep], xywh), 1)  # (image, class, x, y, w, h) normalised
        tcls, tbox, indices, anch = self.build_targets(p, targets)
        lbox, lobj, lcls = torch.zeros(1), torch.zeros(1), torch.zeros(1)
        for i, pi in enumerate(p):
            bi, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype)
            n = bi.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[bi, a, gj, gi].split((2, 2, 1, self.nc), 1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anch[i]
                iou = bbox_iou(xywh2xyxy(torch.cat((pxy, pwh), 1)), xywh2xyxy(tbox[i])).squeeze(-1)
                lbox += (1.0 - iou).mean()
                tobj[bi, a, gj, gi] = iou.detach().clamp(0).type(tobj.dtype)  # gr = 1.0
                t = torch.zeros_like(pcls)
                t[range(n), tcls[i]] = 1.0
                lcls += self.bce(pcls, t)
            lobj += self.bce(pi[..., 4], tobj) * self.balance[i]
        loss = torch.cat((lbox, lobj, lcls)) * self.gains
        return loss.sum() * bs, loss.detach()

    def build_targets(self, p, targets):
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7)
        ai = torch.arange(na).float().view(na, 1).repeat(1, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)
        g = 0.5
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]).float() * g
        for i in range(self.nl):
            anchors, shape = self.anchors[i], p[i].shape
            gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                j = torch.max(r, 1 / r).max(2)[0] < self.anchor_t
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                j, k = ((gxy % 1 < g) & (gxy > 1)).T
                m_l, m = ((gxi % 1 < g) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(j), j, k, m_l, m))
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t, offsets = targets[0], 0
            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gi, gj = gij[:, 0].clamp_(0, shape[3] - 1), gij[:, 1].clamp_(0, shape[2] - 1)
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch


LOSSES = {"v8": V8Loss, "yolox": YOLOXLoss, "v5": V5Loss}
