"""brats_lib: the code behind the brats-repro notebooks.

Modules, in the order data flows through them:

* :mod:`~brats_lib.paths` - the repository's folders (imports nothing of the package)
* :mod:`~brats_lib.labels` - label conventions and tumour regions (one place)
* :mod:`~brats_lib.data` - find, load and validate cases (BraTS 2018-2023, MSD)
* :mod:`~brats_lib.phantoms` - synthetic BraTS-like cases, the default data source
* :mod:`~brats_lib.preprocess` - crop to brain, normalisation, foreground channel
* :mod:`~brats_lib.sampling` - patches, slices, cross-validation splits
* :mod:`~brats_lib.models` - the model registry (``models.build(name)``)
* :mod:`~brats_lib.losses` - region / label losses, deep supervision
* :mod:`~brats_lib.precision` - mixed precision: float16 on CUDA, bfloat16 on CPUs that have it
* :mod:`~brats_lib.training` - the one training loop (resume, DDP, mixed precision)
* :mod:`~brats_lib.inference` - sliding window, flip TTA, writing predictions
* :mod:`~brats_lib.metrics` - Dice, HD95, sensitivity, specificity, PPV
* :mod:`~brats_lib.complexity` - parameters and MACs
* :mod:`~brats_lib.report` - manifests, tables, figures
* :mod:`~brats_lib.claims` - the papers' claims checked on per-case scores (paired tests, verdicts)
* :mod:`~brats_lib.params`, :mod:`~brats_lib.runner`, :mod:`~brats_lib.cli` - notebooks and the command line
"""
__version__ = "0.1.0"
