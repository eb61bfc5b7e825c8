"""Code an exported model carries with it (``adasparse export``): numpy, pyarrow and torch only,
and relative imports only, so the export copies this directory into the artefact and a served
row is hashed, looked up and scored by the same code as in training, without this project
installed.

* :mod:`.hashing` — stable hashes of raw values (what a bucket or vocabulary id is made of);
* :mod:`.columns` — Arrow columns → value hashes (missing values), vocabulary ids, numerics;
* :mod:`.runtime` — load an exported model and score raw rows.
"""
