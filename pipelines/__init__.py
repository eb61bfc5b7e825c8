"""Ray jobs around the model library: streaming ingest (Ray Data), distributed training
(Ray Train) and sweeps (Ray Tune). Everything that imports Ray lives here, never in
``adasparse/``."""
