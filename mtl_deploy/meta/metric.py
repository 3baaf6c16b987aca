"""The functional core of the metric learners: Prototypical Networks (class prototypes,
squared Euclidean distance) and Matching Networks (cosine attention over the support set).
Adapting one of them means computing the support embeddings, nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl_deploy.data.episodes import Episodes
from mtl_deploy.models.fewshot import FewShotModel, matching_log_probs, squared_distances




def _embed_tasks(model: FewShotModel, x: torch.Tensor) -> torch.Tensor:
    t, n = x.shape[:2]
    return model.embed(x.reshape(t * n, *x.shape[2:])).reshape(t, n, -1)  # (T, n, F)


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """(T, S, F), (T, S) -> (T, ways, F): the mean embedding of each class's shots."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype)  # (T, S, ways)
    return onehot.transpose(1, 2) @ embeddings / onehot.sum(1).unsqueeze(-1)


def metric_logits(model: FewShotModel, algorithm: str, episodes: Episodes) -> torch.Tensor:
    """(T, Q, ways) query logits (ProtoNets) or log-probabilities (Matching Networks). The
    episodes' ways may exceed the model's (meta-training with more ways than testing)."""
    ways = int(episodes.support_y.max()) + 1
    support = _embed_tasks(model, episodes.support_x)
    queries = _embed_tasks(model, episodes.query_x)
    if algorithm == "protonet":
        return -model.metric_scale * squared_distances(queries, prototypes(support, episodes.support_y, ways))
    onehot = F.one_hot(episodes.support_y, ways).to(support.dtype)
    return matching_log_probs(queries, support, onehot, model.metric_scale)


def metric_loss(model: FewShotModel, algorithm: str, episodes: Episodes) -> torch.Tensor:
    logits = metric_logits(model, algorithm, episodes)
    return F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())  # log-softmax of log-probs is a no-op


@torch.no_grad()
def with_support(model: FewShotModel, algorithm: str, support_x: torch.Tensor, support_y: torch.Tensor) -> FewShotModel:
    """A copy of `model` whose head holds the support set: prototypes or embeddings."""
    ways = model.task.out_dim
    embeddings = model.eval().embed(support_x)  # (S, F)
    head = "prototypes" if algorithm == "protonet" else "matching"
    adapted = model.reheaded(head=head, support_size=len(support_x))  # the support buffers are filled below
    if head == "prototypes":
        adapted.prototypes.copy_(prototypes(embeddings[None], support_y[None], ways)[0])
    else:
        adapted.support.copy_(embeddings)
        adapted.support_onehot.copy_(F.one_hot(support_y, ways).to(embeddings.dtype))
    return adapted.eval()
