"""Parameter schemas of the notebooks (one dataclass each; see :mod:`brats_lib.params`).

Every key of ``params/<notebook>/<profile>.yaml`` is declared here with its type;
a key without a default is required.
"""
from __future__ import annotations

from dataclasses import field

from .params import schema


@schema("00_data_and_metrics")
class PrimerParams:
    """The data and metrics primer."""

    seed: int
    #: phantom cases generated for the data demo (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int] = field(default_factory=lambda: [96, 96, 96])
    #: a real BraTS folder (any supported layout); None uses phantoms
    data_dir: str | None = None
    #: folder of real BraTS-space test cases shown beside the phantom; skipped if absent
    real_dir: str | None = "../shared/data/real"
    #: which algorithm outputs of the real cases are scored against the fusion
    algorithms: list[str] = field(default_factory=lambda: ["hnfnetv1-20", "isen-20", "sanet0-20", "scan-20", "yixinmpl-20"])
    #: how many prediction/reference pairs the HD95 library comparison uses
    hd95_pairs: int = 10
