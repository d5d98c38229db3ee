"""The application layer: what runs notebooks and serves the command line.

* :mod:`~brats_lib.app.profiles` - every notebook's parameter schema registered; ``load``
  a profile (``params/<notebook>/<profile>.yaml``).
* :mod:`~brats_lib.app.session` - a notebook's setup in one call: parameters, output and
  run folders, device, real cases, the stopwatch, cases and folds, the manifest.
* :mod:`~brats_lib.app.runner` - execute notebooks headlessly (papermill) into ``reports/``.
* :mod:`~brats_lib.app.cli` - ``python -m brats_lib ...``.

It sits above everything else: it may import the papers (:mod:`brats_lib.papers`) and
the comparison; nothing below imports it.
"""
