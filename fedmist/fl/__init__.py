"""Real federated learning (``mode = "fl"``): each client trains only on its own fixed partition.

- ``partition``: iid / Dirichlet(α) label-skew partitions of the training set over the clients.
- ``loop``: the FL rounds (FedAvg, MIST in private-data mode, DP-FedAvg) over the engine's
  ``Federation`` (in-process or Flower), with optional recording of what every party observes.
- ``client``: what an FL client adds to its local job (more local epochs, Nasr et al.'s active
  gradient ascent when it is the attacker, client-side clipping for DP-FedAvg).
- ``recording``: per-round global models and per-client updates under ``runs/NAME/updates/``.
- ``threats``: the server / participant audits on a recorded run (``fedmist attack --threat``).
"""
