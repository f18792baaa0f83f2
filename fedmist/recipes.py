"""Paper recipes (MIST Table 7) as TOML files in ``experiments/recipes/``."""

from __future__ import annotations

from pathlib import Path

from fedmist.data.registry import DEFAULT_MODEL, base_name

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def recipe_dirs() -> list[Path]:
    """``./experiments/recipes`` first (a user's own), then the ones shipped with fedmist."""
    dirs = [Path("experiments/recipes"), PROJECT_ROOT / "experiments" / "recipes"]
    return [d for d in dirs if d.is_dir()]


def default_recipe(dataset: str, defense: str, model: str = "") -> Path | None:
    """``<dataset>-<defense>.toml`` (tabular) or ``<dataset>-<model>-<defense>.toml`` (CIFAR).

    ``synthetic:texas`` uses the Texas recipe: same shapes, same hyperparameters.
    """
    base = base_name(dataset)
    model = model or DEFAULT_MODEL.get(base, "mlp")
    names = [f"{base}-{model}-{defense}.toml", f"{base}-{defense}.toml"]
    for d in recipe_dirs():
        for name in names:
            if (d / name).is_file():
                return d / name
    return None
