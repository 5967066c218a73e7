"""The online phase: corpora read, prepared and checked, the base model stored, and the workspace built and
vouched for by its manifest."""
