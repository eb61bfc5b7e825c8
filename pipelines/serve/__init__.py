"""A finished run as a serving artefact (:mod:`.export_run`) and batch scoring on Ray Data
(:mod:`.predict`, the model shared through the object store by :mod:`.shared_model`)."""
