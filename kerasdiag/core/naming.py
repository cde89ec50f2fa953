"""Names of runs: what ``--help`` lists, what run directories and report titles are called.

A run is named after its recipe and, when the command line swapped them, the data and model it
really used (``outputs/cifar_softmax+image_folder+my_resnet/...``), so a run with your own
data or model is never filed under the recipe it overrode. No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def recipe_descriptions(conf_dir: str | Path) -> list[tuple[str, str]]:
    """``(name, first line of its header comment)`` for every ``conf_dir/recipe/*.yaml``."""
    found = []
    for path in sorted(Path(conf_dir).glob("recipe/*.yaml")):
        comments = [
            ln.lstrip("#").strip() for ln in path.read_text().splitlines() if ln.startswith("#")
        ]
        found.append(
            (path.stem, next((c for c in comments if c and not c.startswith("@package")), ""))
        )
    return found


def recipes_help(conf_dir: str | Path) -> str:
    """The recipes, one line each, for Hydra's ``--help`` page."""
    entries = recipe_descriptions(conf_dir)
    width = max((len(name) for name, _ in entries), default=0)
    return "\n".join(f"  {name.ljust(width)}  {line}" for name, line in entries)


def _recipe_choices(conf_dir: Path, recipe: str) -> dict[str, str]:
    """The data and model options a recipe file selects (``override /data: cifar10``)."""
    path = conf_dir / "recipe" / f"{recipe}.yaml"
    try:
        defaults = OmegaConf.load(path).get("defaults") or []
    except Exception:  # a recipe from another search path, or unreadable: name nothing
        return {}
    chosen = {}
    for entry in defaults:
        if isinstance(entry, Mapping) or OmegaConf.is_dict(entry):
            for key, value in entry.items():
                group = str(key).removeprefix("override").strip().lstrip("/")
                chosen[group] = str(value)
    return chosen


def run_name(conf_dir: str | Path, recipe: str, data: str, model: str) -> str:
    """``recipe``, plus the data and model options that differ from the recipe's own.

    Example:
        >>> from kerasdiag.config import CONF_DIR
        >>> run_name(CONF_DIR, "cifar_softmax", "cifar10", "convnet")
        'cifar_softmax'
        >>> run_name(CONF_DIR, "cifar_softmax", "image_folder", "resnet")
        'cifar_softmax+image_folder+resnet'
    """
    own = _recipe_choices(Path(conf_dir), recipe)
    if not own:
        return recipe
    parts = [recipe]
    parts += [
        value for group, value in (("data", data), ("model", model)) if own.get(group) != value
    ]
    return "+".join(parts)


def model_label(model_cfg: Mapping[str, Any]) -> str:
    """The model's builder, as its last dotted component (``resnet``, ``convnet``)."""
    path = model_cfg.get("_target_") or model_cfg.get("builder") or "?"
    return str(path).rsplit(".", 1)[-1]


def run_title(config: Mapping[str, Any]) -> str:
    """``recipe (data D, model M)``: the data and model a run really used, for its report."""
    data = config.get("data") or {}
    name = str(data.get("name") or "?")
    if data.get("path"):
        name += f" ({Path(str(data['path'])).name})"
    recipe, model = config.get("recipe") or "?", model_label(config.get("model") or {})
    return f"{recipe} (data {name}, model {model})"


def register_resolvers(conf_dir: str | Path) -> None:
    """``${kd_recipes:}`` (the --help list) and ``${kd_run_name:recipe,data,model}`` (run
    directories) for ``conf/config.yaml``'s hydra section."""
    OmegaConf.register_new_resolver("kd_recipes", lambda: recipes_help(conf_dir), replace=True)
    OmegaConf.register_new_resolver(
        "kd_run_name", lambda r, d, m: run_name(conf_dir, str(r), str(d), str(m)), replace=True
    )
