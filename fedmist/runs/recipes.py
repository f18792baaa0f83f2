"""Paper recipes (MIST Table 7 and the defenses' papers) as TOML files shipped in ``fedmist/recipes/``
(``experiments/recipes`` in a checkout links there), so an installed fedmist finds them anywhere."""

from __future__ import annotations

from pathlib import Path

from fedmist.data.registry import DEFAULT_MODEL, base_name
from fedmist.defenses import DEFENSES
from fedmist.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "recipes"


def recipe_dirs() -> list[Path]:
    """``./experiments/recipes`` first (a user's own), then the ones shipped with fedmist."""
    dirs = [Path("experiments/recipes"), SHIPPED]
    return [d for d in dirs if d.is_dir()]


def find_recipe(name: str) -> Path:
    """A recipe by path, or by name in the recipe directories (``location-advreg-artefact``, with or
    without ``.toml``); a ConfigError lists the names it looked for."""
    path = Path(name)
    if path.is_file():
        return path
    stem = name[:-5] if name.endswith(".toml") else name
    for d in recipe_dirs():
        if (d / f"{stem}.toml").is_file():
            return d / f"{stem}.toml"
    raise ConfigError(f"no recipe {name!r}: not a file, and no {stem}.toml in {', '.join(map(str, recipe_dirs()))}")


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
    spec = DEFENSES.get(defense)
    if spec is not None and spec.recipe_from:  # e.g. fedavg trains with the sgd recipe's hyperparameters
        return default_recipe(dataset, spec.recipe_from, model)
    return None
