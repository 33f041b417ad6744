"""Corpus readers: turn dumps and record files into :class:`~memtrain.records.Passage` streams."""
