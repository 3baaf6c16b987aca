"""The learner options of the few-shot literature, against plain computations: Proto-MAML's
head equals ProtoNets before any step and its meta-gradient equals unrolled autograd; a
separate head learning rate; a learned metric scale; meta-training with more ways than testing."""

import pytest
import torch
import torch.nn.functional as F

from mtl_deploy.config import MetaConfig, RunConfig
from mtl_deploy.data.episodes import Episodes
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.meta.gradient_based import adapt_params, predict_with
from mtl_deploy.meta.learners import make_learner
from mtl_deploy.meta.metric import metric_logits
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.meta.train import family_of, meta_train

WAYS = 3


def episodes(gen, tasks=2, shots=2, queries=3, shape=(1, 6, 6), ways=WAYS):
    labels = lambda n: torch.arange(ways).repeat_interleave(n).expand(tasks, -1)  # noqa: E731
    return Episodes(torch.randn(tasks, ways * shots, *shape, generator=gen, dtype=torch.float64), labels(shots),
                    torch.randn(tasks, ways * queries, *shape, generator=gen, dtype=torch.float64), labels(queries))


def conv_model(**kwargs):
    torch.manual_seed(0)
    return FewShotModel((1, 6, 6), TaskSpec("y", "multiclass", WAYS), {"type": "conv", "channels": [3, 4],
                                                                      "norm": "none"}, **kwargs).double()


@pytest.mark.parametrize("head_only", [True, False])
def test_proto_init_before_any_step_ranks_as_protonet(head_only):
    gen = torch.Generator().manual_seed(0)
    model, batch = conv_model(), episodes(gen)
    params = adapt_params(model, batch.support_x, batch.support_y, steps=0, lr=0.1, order=1, head_only=head_only,
                          proto_init=True)
    logits = predict_with(model, params, batch.query_x, head_only)
    protonet = metric_logits(model, "protonet", batch)  # -‖q − c‖²: the same up to ‖q‖² per query
    torch.testing.assert_close(F.log_softmax(logits, -1), F.log_softmax(protonet, -1))


def test_proto_maml_meta_gradient_equals_unrolled_autograd():
    gen = torch.Generator().manual_seed(1)
    model, batch = conv_model(), episodes(gen)
    learner = make_learner(MetaConfig(algorithm="anil", inner_steps=2, inner_lr=0.3, proto_init=True))
    learner.outer_step(model, batch)
    library = [p.grad for p in model.trunk.parameters()]

    features = lambda x: model.embed(x.flatten(0, 1)).view(*x.shape[:2], -1)  # noqa: E731
    losses = []
    for t in range(batch.tasks):
        support, query = features(batch.support_x)[t], features(batch.query_x)[t]
        centres = torch.stack([support[batch.support_y[t] == c].mean(0) for c in range(WAYS)])
        w, b = 2 * centres, -(centres ** 2).sum(1)
        for _ in range(2):
            gw, gb = torch.autograd.grad(F.cross_entropy(support @ w.T + b, batch.support_y[t]), (w, b),
                                         create_graph=True)
            w, b = w - 0.3 * gw, b - 0.3 * gb
        losses.append(F.cross_entropy(query @ w.T + b, batch.query_y[t]))
    oracle = torch.autograd.grad(torch.stack(losses).mean(), list(model.trunk.parameters()))
    for got, want in zip(library, oracle):
        torch.testing.assert_close(got, want)


def test_head_lr_moves_only_the_head_at_its_own_rate():
    gen = torch.Generator().manual_seed(2)
    model, batch = conv_model(), episodes(gen)
    run = lambda **k: adapt_params(model, batch.support_x, batch.support_y, steps=1, order=1, **k)  # noqa: E731
    same, split, head_only = run(lr=0.1), run(lr=0.1, head_lr=0.5), run(lr=0.1, head_only=True)
    start = model.adapted_parameters()
    for a, b in zip(same[:-2], split[:-2]):  # the trunk steps as before
        torch.testing.assert_close(a, b)
    for p, a, b in zip(start[-2:], same[-2:], split[-2:]):  # the head's step is 5x as long
        torch.testing.assert_close(b - p, 5 * (a - p))
    anil = adapt_params(model, batch.support_x, batch.support_y, steps=1, lr=0.1, order=1, head_only=True,
                        head_lr=0.5)
    for p, a, b in zip(start[-2:], head_only, anil):
        torch.testing.assert_close(b - p, 5 * (a - p))


@pytest.mark.parametrize("algorithm", ["protonet", "matching"])
def test_a_learned_scale_is_a_parameter_the_logits_use(algorithm):
    gen = torch.Generator().manual_seed(3)
    batch = episodes(gen)
    head = "prototypes" if algorithm == "protonet" else "matching"
    torch.manual_seed(0)
    model = FewShotModel((1, 6, 6), TaskSpec("y", "multiclass", WAYS), {"type": "conv", "channels": [3]}, head,
                         learned_scale=True).double()
    fixed = FewShotModel.from_config({**model.config(), "learned_scale": False}).double()
    fixed.load_state_dict({k: v for k, v in model.state_dict().items() if k != "scale"}, strict=True)
    torch.testing.assert_close(metric_logits(model, algorithm, batch), metric_logits(fixed, algorithm, batch))
    with torch.no_grad():
        model.scale.mul_(2)
    if algorithm == "protonet":
        torch.testing.assert_close(metric_logits(model, algorithm, batch), 2 * metric_logits(fixed, algorithm, batch))
    make_learner(MetaConfig(algorithm=algorithm)).outer_step(model, batch)
    assert model.scale.grad is not None and model.scale.grad != 0


def test_meta_training_with_more_ways_than_testing():
    config = RunConfig(meta=MetaConfig(algorithm="protonet", family="digits", ways=5, train_ways=10, shots=1,
                                       queries=2, meta_batch=2, iterations=3, val_every=3, val_tasks=4))
    config.model.trunk = {"type": "conv", "channels": [4]}
    family = family_of(config.meta)
    assert family.samplers["train"].ways == 10 and family.samplers["val"].ways == 5
    fitted = meta_train(config, progress=False)
    assert fitted.model.task.out_dim == 5
    config.meta.algorithm = "anil"
    with pytest.raises(InputError, match="train_ways applies to protonet and matching"):
        family_of(config.meta)


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(InputError, match="apply to gradient-based learners"):
        make_learner(MetaConfig(algorithm="protonet", proto_init=True))
    with pytest.raises(InputError, match="not reptile"):
        make_learner(MetaConfig(algorithm="reptile", head_lr=0.1))
