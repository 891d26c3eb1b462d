"""Training for the project's own small models on the procedural world (generator and keypoint judge)."""
