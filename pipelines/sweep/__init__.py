"""Ray Tune sweeps over the training job (:mod:`.tune`, spaces in :mod:`.tune_space`) and the
seeded model comparison built on them (:mod:`.compare`)."""
