"""Data the course generates itself, seeded, with no download."""
