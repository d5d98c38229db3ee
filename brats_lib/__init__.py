"""brats_lib: the code behind the brats-repro notebooks.

Three layers; imports point down only (no cycles, none through ``importlib``).

**Stages** (top-level modules), in the order data flows through them:

* :mod:`~brats_lib.paths` - the repository's folders (imports nothing of the package)
* :mod:`~brats_lib.labels` - label conventions, tumour regions, modality order (one place)
* :mod:`~brats_lib.data` - find, load and validate cases (BraTS 2018-2023, MSD)
* :mod:`~brats_lib.phantoms` - synthetic BraTS-like cases, the default data source
* :mod:`~brats_lib.preprocess` - crop to brain, normalisation, foreground channel
* :mod:`~brats_lib.sampling` - patches, slices, cross-validation splits
* :mod:`~brats_lib.augmentation` - nnU-Net-style patch augmentation (CPU and on the device)
* :mod:`~brats_lib.models` - the network registry (``models.build(name)``) and shared networks
* :mod:`~brats_lib.losses` - region / label losses, deep supervision
* :mod:`~brats_lib.precision` - mixed precision: float16 on CUDA, bfloat16 on CPUs that have it
* :mod:`~brats_lib.training` - the one training loop, in parts (resume, DDP, mixed precision)
* :mod:`~brats_lib.inference` - sliding window, flip TTA, predictor files, writing predictions
* :mod:`~brats_lib.postprocess` - the post-processing registry (rules live with their papers)
* :mod:`~brats_lib.io` - atomic writes and checkpoints
* :mod:`~brats_lib.metrics` - Dice, HD95, sensitivity, specificity, PPV
* :mod:`~brats_lib.statistics` - confidence intervals, paired tests, CI tables, rankings
* :mod:`~brats_lib.claims` - the papers' claims checked on per-case scores (one type, one checker)
* :mod:`~brats_lib.complexity` - parameters and MACs
* :mod:`~brats_lib.tables`, :mod:`~brats_lib.figures`, :mod:`~brats_lib.manifest` - what a report holds
* :mod:`~brats_lib.params` - parameter schemas: the common base fields, validation, loading
* :mod:`~brats_lib.pipeline` - the one interface every paper implements; the cross-validation loop

**Papers** (:mod:`brats_lib.papers`): one package per paper, each implementing
:class:`~brats_lib.pipeline.Pipeline`; :mod:`~brats_lib.comparison` runs them on the same folds.

**Application** (:mod:`brats_lib.app`): profiles, notebook sessions, the runner, the CLI.
"""
__version__ = "0.1.0"
