"""Any `nn.Module` as a trunk: the user's network, called with the inputs its examples
showed, its output turned into one feature row per example.

The output may be a tensor, a tuple whose first element holds the features, or a Hugging
Face model output. `pooling` says how a sequence or feature map becomes a row: `"cls"`
(first position), `"mean"` (over the sequence, masked by an `attention_mask` input when
there is one; over the spatial axes of a (B, C, H, W) map), `"pooler"` (a Hugging Face
`pooler_output`), `"flatten"`, or `"auto"`: the pooler output when there is one, the
masked mean of a (B, S, H) sequence, the global average of a (B, C, H, W) map, a (B, D)
tensor as it is.

A trunk saves as the recipe that rebuilds it (`source`): a factory `package.module:callable`
with keyword arguments, imported only from trusted packages (see `mtl_deploy.trust`), or a
Hugging Face config, rebuilt by `transformers` with no network. Its weights go into the
checkpoint's safetensors like any other.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from mtl_deploy.errors import InputError, bounded
from mtl_deploy.models.inputs import BATCH, MASK_NAME, SEQUENCE, InputSpec, Signature, example_signature
from mtl_deploy.trust import resolve_factory

POOLINGS = ("auto", "cls", "mean", "pooler", "flatten")
NORMS = (nn.modules.batchnorm._BatchNorm,)


def call_module(module: nn.Module, inputs, layout: str):
    """A user's network called with inputs in the layout its examples had."""
    if layout == "dict":
        return module(**inputs)
    return module(*inputs) if layout == "tuple" else module(inputs)


def run_on_examples(fn, example, what: str):
    """`fn(example)` without gradients; a user's network failing on its examples (in any
    way) is one InputError that says so."""
    try:
        with torch.no_grad():
            return fn(example)
    except InputError:
        raise
    except Exception as err:  # the user's code may raise anything on inputs it does not take
        raise InputError(f"{what} fails on the example inputs ({type(err).__name__}: {str(err).strip()[:160]}); "
                         "give example_inputs it takes") from None


def check_rebuildable(model: nn.Module) -> None:
    """A checkpoint holds recipes, not code: every user trunk in `model` must say how it is rebuilt."""
    for module in model.modules():
        if isinstance(module, ModuleTrunk) and module.source is None:
            raise InputError(f"cannot save: the trunk {type(module.module).__name__} does not say how it is rebuilt; "
                             "pass wrap(..., factory='package.module:callable', kwargs={...}) (export works without it)")


def features_of(output, pooling: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D) features from what a network returned."""
    if isinstance(output, torch.Tensor) and output.dim() == 2 and pooling in ("auto", "flatten"):
        return output  # the common case, before any attribute lookup on a tensor
    pooled = getattr(output, "pooler_output", None)
    if pooling == "pooler" or (pooling == "auto" and isinstance(pooled, torch.Tensor)):
        if not isinstance(pooled, torch.Tensor):
            raise InputError("pooling 'pooler' needs an output with pooler_output; use 'cls' or 'mean'")
        return pooled
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(hidden, torch.Tensor) or hidden.dim() < 2:
        raise InputError(f"the trunk returned {type(hidden).__name__}; it must return a (B, ...) tensor, a tuple "
                         "whose first element is one, or a Hugging Face model output")
    if pooling == "cls":
        return hidden[:, 0]
    if hidden.dim() >= 4 and pooling in ("mean", "auto"):
        return hidden.flatten(2).mean(2)  # a (B, C, H, W) feature map: global average pooling
    if pooling == "mean" or (pooling == "auto" and hidden.dim() == 3):
        if mask is None:
            return hidden.mean(1)
        weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return hidden.flatten(1)


def frozen_names(module: nn.Module, freeze) -> list[str]:
    """Parameter names `freeze` covers: True every one, False none, or a list of name
    prefixes / glob patterns."""
    names = [n for n, _ in module.named_parameters()]
    if freeze is True:
        return names
    if freeze is False or freeze is None:
        return []
    if isinstance(freeze, str) or not all(isinstance(p, str) for p in freeze):
        raise InputError(f"freeze must be true, false or a list of parameter name prefixes, got {freeze!r}")
    unmatched = [p for p in freeze if not any(n.startswith(p) or fnmatch.fnmatch(n, p) for n in names)]
    if unmatched:
        raise InputError(f"freeze patterns {bounded(unmatched, 3)} match no parameter of the trunk "
                         f"(it has {bounded(names, 3)})")
    return [n for n in names if any(n.startswith(p) or fnmatch.fnmatch(n, p) for p in freeze)]


class ModuleTrunk(nn.Module):
    """A user's network as the shared trunk: `forward(inputs) -> (B, out_features)`."""

    def __init__(self, module: nn.Module, signature: Signature, pooling: str = "auto", source: dict | None = None,
                 freeze=False, example=None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise InputError(f"the trunk must be a torch.nn.Module, got {type(module).__name__}")
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        self.module, self.signature, self.pooling, self.source = module, signature, pooling, source
        self.set_freeze(freeze, thaw_others=False)  # what the user froze themselves stays frozen
        if example is None:
            example = signature.pack(list(signature.random(2).values()))
        self.out_features = self._width(example)

    def set_freeze(self, freeze, thaw_others: bool = True) -> None:
        """Freezes the parameters `freeze` names (True, False or name prefixes / globs) and,
        with `thaw_others`, makes every other one trainable; the checkpoint records it."""
        frozen = set(frozen_names(self.module, freeze))
        for name, parameter in self.module.named_parameters():
            if name in frozen or thaw_others:
                parameter.requires_grad_(name not in frozen)
        self.freeze = freeze if isinstance(freeze, bool) else list(freeze)

    def _width(self, example) -> int:
        was_training = self.module.training
        try:
            features = run_on_examples(self, example, f"the trunk {type(self.module).__name__}")
        finally:
            self.module.train(was_training)
        if features.dim() != 2 or not features.is_floating_point():
            raise InputError(f"the trunk's features have shape {list(features.shape)}; pooling must give (B, D)")
        return int(features.shape[1])

    def forward(self, inputs) -> torch.Tensor:
        output = call_module(self.module, inputs, self.signature.layout)
        mask = inputs.get(MASK_NAME) if isinstance(inputs, dict) else None
        features = features_of(output, self.pooling, mask)
        return features if features.is_contiguous() else features.contiguous()  # the head kernel reads rows in place

    def train(self, mode: bool = True) -> "ModuleTrunk":
        """Frozen normalisation layers keep their running statistics: they stay in eval mode."""
        super().train(mode)
        for layer in self.module.modules():
            if isinstance(layer, NORMS) and not any(p.requires_grad for p in layer.parameters(recurse=False)):
                layer.eval()
        return self

    def config(self) -> dict:
        """The recipe that rebuilds this trunk; without a `source` it only names the class
        (an export's manifest says what it was made from; `save` refuses it)."""
        source = self.source or {"type": "module", "factory": None,
                                 "class": f"{type(self.module).__module__}.{type(self.module).__qualname__}"}
        return {**source, "pooling": self.pooling, "freeze": self.freeze, "out_features": self.out_features,
                "signature": self.signature.to_dict()}


@contextlib.contextmanager
def _offline():
    """Hugging Face code reads local files only: no request leaves the machine."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise InputError("a transformers trunk needs the transformers package: pip install 'mtl-deploy[hf]'") from None
    return transformers


def text_signature(vocab_size: int) -> Signature:
    """Token ids and attention mask, (batch, sequence) int64 each."""
    return Signature((InputSpec("input_ids", "int64", (BATCH, SEQUENCE), 0, int(vocab_size)),
                      InputSpec(MASK_NAME, "int64", (BATCH, SEQUENCE), 0, 2)), "dict")


def _hf_network(config: dict) -> nn.Module:
    """From the local directory `path` (pretrained weights), or from the saved `hf_config`
    (a checkpoint, whose weights come with it)."""
    transformers = _transformers()
    with _offline():
        if "hf_config" not in config:
            path = Path(config["path"])
            if not (path / "config.json").is_file():
                raise InputError(f"transformers trunk path {str(path)!r} has no config.json; give a local model "
                                 "directory (config.json and safetensors weights)")
            try:
                return transformers.AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read the transformers model in {path} ({str(err).strip()[:160]})") from None
        hf_config = dict(config["hf_config"])
        model_type = hf_config.pop("model_type", None)
        try:
            return transformers.AutoModel.from_config(transformers.AutoConfig.for_model(model_type, **hf_config))
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(f"cannot rebuild the transformers model ({str(err).strip()[:160]})") from None


def hf_source(network: nn.Module) -> dict:
    """How a Hugging Face model is rebuilt: its config, by `transformers` itself."""
    skip = ("transformers_version", "_name_or_path", "architectures")
    return {"type": "transformers", "hf_config": {k: v for k, v in network.config.to_dict().items() if k not in skip}}


def _load_weights(network: nn.Module, path) -> None:
    """The pretrained weights a trunk config names, which must fit the network exactly."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"trunk weights {str(path)!r} do not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as err:
        raise InputError(f"trunk weights {path} are not a safetensors file ({str(err)[:120]})") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"trunk weights {path} do not fit the factory's model "
                         f"({str(err).strip().splitlines()[0][:200]})") from None


def trunk_from_config(config: dict) -> ModuleTrunk:
    """The trunk a config describes: a training config names a Hugging Face directory or a
    `weights` file to start from; a checkpoint's says how to rebuild it (its weights come
    with the checkpoint)."""
    kind = config.get("type")
    pooling = config.get("pooling", "auto")
    if kind == "transformers":
        network = _hf_network(config)
        source = hf_source(network)
        signature = (Signature.from_dict(config["signature"]) if "signature" in config
                     else text_signature(network.config.vocab_size))
    else:
        factory = config.get("factory")
        kwargs = config.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise InputError(f"trunk kwargs must be a JSON object, got {type(kwargs).__name__}")
        try:
            network = resolve_factory(factory)(**kwargs)  # resolve_factory parses the name first
        except InputError:
            raise
        except Exception as err:  # the factory is the user's code
            raise InputError(f"factory {factory!r} failed ({type(err).__name__}: {str(err).strip()[:160]})") from None
        if not isinstance(network, nn.Module):
            raise InputError(f"factory {factory!r} returned {type(network).__name__}, not a torch.nn.Module")
        source = {"type": "module", "factory": factory, "kwargs": kwargs}
        if "signature" not in config and "example_inputs" not in config:
            raise InputError("a module trunk needs 'example_inputs' ({name: {'shape': [...], 'dtype': ...}}) "
                             "or a signature")
        signature = Signature.from_dict(config["signature"]) if "signature" in config else _config_signature(config)
    if config.get("weights"):
        _load_weights(network, config["weights"])
    trunk = ModuleTrunk(network, signature, pooling, source, config.get("freeze", False))
    expected = config.get("out_features")
    if expected is not None and expected != trunk.out_features:
        raise InputError(f"the trunk's output width is {trunk.out_features}, the heads expect {expected}: "
                         "the factory builds another network than the one saved")
    return trunk


def _config_signature(config: dict) -> Signature:
    """Example inputs described in a config: {name: {"shape": [rows, ...], "dtype": ..., "high": ...}}."""
    entries = config["example_inputs"]
    if not isinstance(entries, dict) or not entries:
        raise InputError("trunk example_inputs must map input names to {'shape': [...], 'dtype': ...}")
    example = {}
    for name, entry in entries.items():
        dtype = getattr(torch, str(entry.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype) or not isinstance(entry.get("shape"), list):
            raise InputError(f"trunk example_inputs[{name!r}] needs a shape list and a torch dtype name")
        shape = [2, *entry["shape"]]
        example[name] = (torch.randint(0, int(entry.get("high", 2)), shape, dtype=dtype) if not dtype.is_floating_point
                         else torch.zeros(shape, dtype=dtype))
    return example_signature(example if len(example) > 1 else next(iter(example.values())))
