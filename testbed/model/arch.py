"""`model.arch`: a torchvision classification model by name, or a user's factory by import path.

`resnet50`, `efficientnet_b0`, `vit_b_16`: torchvision's builder with `weights=None` (nothing is
downloaded) and the run's class count; a ViT is built for the run's input size. `pkg.mod:build`:
`build(num_classes=N)` from an importable module, which must return an `nn.Module`. Torch is imported
only when a name is checked or built, so loading a topology stays light.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any


def torchvision_classifiers() -> list[str]:
    import torchvision  # torchvision: pulls in torch

    return sorted(torchvision.models.list_models(module=torchvision.models))


def arch_problem(arch: str) -> str | None:
    """Why `arch` cannot be built (None if it can): an unknown name with the close ones, or an import
    path that does not import or does not name a callable."""
    if ":" in arch:
        try:
            _factory(arch)
        except (ImportError, AttributeError, ValueError, TypeError) as e:
            return str(e)
        return None
    names = torchvision_classifiers()
    if arch in names:
        return None
    close = difflib.get_close_matches(arch, names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}; " if close else ""
    return (f"unknown model; {hint}allowed: a torchvision classification model ({len(names)}, e.g. resnet50, "
            "efficientnet_b0, vit_b_16) or an import path pkg.module:factory")


def _factory(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"import path {path!r}: expected pkg.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure to import is reported with its reason
        raise ImportError(f"import path {path!r}: module {module_name} does not import "
                          f"({type(e).__name__}: {e})") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AttributeError(f"import path {path!r}: {module_name} has no callable {attr}")
    return factory


def build_network(arch: str, num_classes: int, input_size: int) -> Any:
    """The unsplit network, randomly initialised (the caller seeds torch)."""
    from torch import nn  # torch: seconds to import, only where a model runs

    if ":" in arch:
        net = _factory(arch)(num_classes=num_classes)
        if not isinstance(net, nn.Module):
            raise TypeError(f"import path {arch!r}: the factory returned {type(net).__name__}, not an nn.Module")
        return net
    import torchvision  # torchvision: pulls in torch

    extra = {"image_size": input_size} if arch.startswith("vit_") else {}
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **extra)
