"""Parameter profiles of every notebook: each schema registered, one ``load``.

The schemas live beside their code (a paper's in ``brats_lib/papers/<paper>/params.py``,
the comparison's in :mod:`brats_lib.comparison`); importing this module registers them
all, plus the primer's below. Loading and validation are :mod:`brats_lib.params`', whose
names are re-exported here.
"""
from __future__ import annotations

from dataclasses import field

import brats_lib.comparison  # noqa: F401  (registers the comparison's schema)
import brats_lib.papers  # noqa: F401  (registers every paper's schema, networks and rules)
from brats_lib.params import (PROFILES, DataParams, FileName, FoldParams, ParamsError, TrainingParams,  # noqa: F401
                              as_dict, get_schema, load, read_yaml, registered, schema, validate)


@schema("00_data_and_metrics")
class PrimerParams(DataParams):
    """The data and metrics primer."""

    phantom_shape: list[int] = field(default_factory=lambda: [96, 96, 96])
    #: which algorithm outputs of the real cases are scored against the fusion
    algorithms: list[str] = field(default_factory=lambda: ["hnfnetv1-20", "isen-20", "sanet0-20", "scan-20", "yixinmpl-20"])
    #: how many prediction/reference pairs the HD95 library comparison uses
    hd95_pairs: int = 10
