"""Analyses of datasets and finished runs: the domain summary, Fig. 3 (a-b) of the paper."""
