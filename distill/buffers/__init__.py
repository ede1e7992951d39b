"""Expert trajectories: the training recipe, the on-disk format (writer/reader), reference-format import."""
