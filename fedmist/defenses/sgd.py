"""Undefended baseline: plain SGD, run as a 1-client federation so it shares MIST's code path."""

from fedmist.defenses.registry import DefenseSpec, register_defense

SGD = register_defense(DefenseSpec(
    name="sgd",
    description="undefended baseline: minibatch SGD on the whole training set (1-client federation)",
    fixed_clients=1,
    fl_name="FedAvg",  # --mode fl --defense sgd: FedAvg (DP-FedAvg with fl_dp_noise > 0), as before fedavg existed
))
