"""Procedural datasets: worlds whose every image comes with exactly known keypoints."""
