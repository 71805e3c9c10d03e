"""The share check: before the warm start pools the clients' synthetic shares, the server asks of each share whether
its labels agree with what the other clients' shares teach, without any client data.

A client whose adapter was fitted on wrongly labelled images (a poisoning attack) draws images of one digit under
another's label. A classifier trained on the other clients' shares recognises the class actually drawn, so its
agreement with the share's labels falls far below an honest client's. The clients are dealt round-robin (in
partition order) into `server.share-check-folds` groups; one classifier per group is trained on every other group's
shares and scores the group's own. A share scoring below `server.share-check-ratio` x the median client's score is
flagged: recorded in results.json and named in the log (`report`), and left out of the pool (`enforce`).

Each client may be alone in its look, so the classifiers see shapes rather than looks: grey, each image
standardized, trained on both polarities and scored on the better one (`shape_view`). A classifier that learned
three looks still knows the fourth's shapes only roughly: the check rests on the gap between a roughly right share
and a consistently wrong one (BENCHMARKS.md, clients that lie).

What it does not stop: a liar whose share keeps the labels (images of another look, correctly labelled), a liar
who is the only client of a class, or an attacker who knows the scoring and poisons only as much as passes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from warmfed_flwr.data.types import ImageSplit, float_pixels
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import classifier_schedule, pick_device, predict_logits, train_supervised
from warmfed_flwr.logs import logger
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.store import Share


@dataclass(frozen=True)
class ShareScore:
    """One client's share as the check saw it: its agreement and whether it was flagged."""

    partition_id: int
    agreement: float
    flagged: bool


def shape_view(images: torch.Tensor, polarity: int) -> torch.Tensor:
    """`images` (float or uint8) as grey, each standardized to mean 0.5 and spread 0.25, with `polarity` -1 swapping
    dark and light; three identical channels, as the run's classifier takes them."""
    grey = float_pixels(images).mean(dim=1, keepdim=True)
    spread = grey.std(dim=(2, 3), keepdim=True).clamp(min=1e-3)
    standardized = polarity * (grey - grey.mean(dim=(2, 3), keepdim=True)) / spread
    return (0.5 + 0.25 * standardized).clamp(0.0, 1.0).repeat(1, 3, 1, 1).contiguous()


def score_shares(shares: list[Share], run: RunContext) -> list[ShareScore]:
    """Each share's agreement with classifiers trained without its group, and the flag (see the module doc)."""
    s = run.settings
    groups = min(s.server.share_check_folds, len(shares))
    group_of = [index % groups for index in range(len(shares))]
    agreement = np.zeros(len(shares))
    for group in range(groups):
        others = [share for (_, share), g in zip(shares, group_of) if g != group]
        model = build_classifier(s.model.name, run.num_classes, s.data.image_size, seed=s.seed)
        images = torch.cat([shape_view(o.images, polarity) for polarity in (1, -1) for o in others])
        labels = torch.cat([o.labels for _ in (1, -1) for o in others])
        train_supervised(model, ImageSplit(images, labels),
                         classifier_schedule(s.train, s.server.share_check_epochs, s.seed + group))
        for index, ((_, share), g) in enumerate(zip(shares, group_of)):
            if g == group:
                agreement[index] = max(
                    float((predict_logits(model, shape_view(share.images, polarity), pick_device()).argmax(dim=1)
                           == share.labels).float().mean())
                    for polarity in (1, -1)
                )
    threshold = s.server.share_check_ratio * float(np.median(agreement))
    return [ShareScore(client.partition_id, float(score), bool(score < threshold))
            for (client, _), score in zip(shares, agreement)]


def check_shares(run: RunContext, shares: list[Share]) -> list[Share]:
    """The shares that go into the pool: all of them unless `server.share-check` is `enforce`, which leaves the
    flagged ones out. Every score is recorded in the client's details (`share_check`)."""
    mode = run.settings.server.share_check
    if mode == "off" or len(shares) < 2:
        return shares
    with run.recorder.phase("share-check"):
        scores = score_shares(shares, run)
    median = float(np.median([score.agreement for score in scores]))
    kept = []
    for (client, share), score in zip(shares, scores):
        action = "left out of the pool" if score.flagged and mode == "enforce" else "pooled"
        run.recorder.clients[client.partition_id].details["share_check"] = {
            "agreement": round(score.agreement, 4),
            "flagged": score.flagged,
            "reason": (f"agreement {score.agreement:.3f} < {run.settings.server.share_check_ratio} x median {median:.3f}"
                       if score.flagged else ""),
            "action": action,
        }
        if score.flagged:
            logger.warning("[share-check] partition %d (%s): its labels agree with the other clients' shares on %.3f "
                           "of its images, below %.2f x the median %.3f; %s",
                           client.partition_id, client.domain, score.agreement, run.settings.server.share_check_ratio,
                           median, action)
        if action == "pooled":
            kept.append((client, share))
    logger.info("[share-check] %d of %d shares flagged (%s)", sum(s.flagged for s in scores), len(scores), mode)
    return kept
