"""Ray jobs around the model library, one subpackage per job (docs/architecture.md):

* :mod:`pipelines.data` — dataset specs, files, reading and encoding on Ray Data, the split by
  time, the domain vocabulary pass, validation, each worker's train stream, dataset writers;
* :mod:`pipelines.runtime` — connecting to Ray, where outputs go, a finished run's files, freeing
  what dead jobs left, how commands end;
* :mod:`pipelines.train` — the Ray Train job (driver, worker, checkpoints, its config and flags);
* :mod:`pipelines.sweep`, :mod:`pipelines.serve`, :mod:`pipelines.analysis` — Tune sweeps and
  ``compare``; ``export`` and ``predict``; the domain analyses;
* :mod:`pipelines.demo` (generate, train, compare), then :mod:`pipelines.cli` on top.

Each layer imports only the layers before it in this list, never a package beside it
(``tests/library/test_import.py``).
Everything that imports Ray lives here, never in ``adasparse/``."""
