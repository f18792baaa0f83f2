"""fedmist: train membership-inference-resistant models with MIST on Flower, and audit them.

The public API, for scripts and notebooks (``experiments/`` uses nothing else). Each name is
imported on first use, so ``import fedmist`` stays light:

- runs: ``RunConfig``, ``default_recipe``, ``prepare_config``, ``open_run``, ``train_run``,
  ``load_run`` / ``LoadedRun``, ``query_model``, ``default_train_size``;
- engines: ``InProcessFederation`` (no Flower), ``simulate_runs`` / ``train_runs`` (Flower's
  simulation), ``run_epoch`` (one MIST epoch), ``ShadowTrainer``, ``available_cores``;
- deployment: ``start_local_cluster`` / ``LocalCluster`` (a SuperLink and N SuperNodes on 127.0.0.1);
- data and models: ``get_workspace``, ``model_name_for``, ``predict_logits``, ``model_part``;
- audits: ``lira_scores``, ``tpr_at_fpr``, ``expand_attack_names``, ``check_attacks``;
- studies: ``CompareSettings``, ``make_cell``, ``run_cells``, ``cell_row``, ``aggregate``,
  ``markdown_table``, ``plot_tradeoff``, ``PAPER_TIME_RATIO``, ``PAPER_MEMORY_FACTOR``,
  ``PAPER_HIGHEST_PLR``; reports: ``write_report``;
- errors: ``FedmistError``, ``AuditError``.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "fedmist.config": ("RunConfig",),
    "fedmist.errors": ("FedmistError", "AuditError"),
    "fedmist.runs.recipes": ("default_recipe",),
    "fedmist.runs.rundir": ("prepare_config", "open_run", "train_run", "default_train_size"),
    "fedmist.runs.load": ("load_run", "LoadedRun", "query_model"),
    "fedmist.runs.inprocess": ("InProcessFederation",),
    "fedmist.runs.shadows": ("ShadowTrainer", "available_cores"),
    "fedmist.flower.simulation": ("simulate_runs", "train_runs"),
    "fedmist.deploy.local_cluster": ("start_local_cluster", "LocalCluster"),
    "fedmist.engine.loop": ("run_epoch",),
    "fedmist.training.workspace": ("get_workspace", "model_name_for"),
    "fedmist.training.evaluate": ("predict_logits",),
    "fedmist.training.jobs": ("model_part",),
    "fedmist.attacks.lira": ("lira_scores",),
    "fedmist.audit.metrics": ("tpr_at_fpr",),
    "fedmist.attacks.registry": ("expand_attack_names", "check_attacks"),
    "fedmist.report": ("write_report",),
    "fedmist.studies.compare": ("CompareSettings", "make_cell", "run_cells", "cell_row", "aggregate",
                                "markdown_table", "plot_tradeoff", "PAPER_TIME_RATIO", "PAPER_MEMORY_FACTOR",
                                "PAPER_HIGHEST_PLR"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fedmist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
