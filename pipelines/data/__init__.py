"""Datasets on Ray Data: specs and files, the one set of encoders (the rules in
:mod:`adasparse.portable.rules`), reading a split, the 4:1:1 split by time, the domain
vocabulary pass, the check of every file, each train worker's resumable stream, writers."""
