"""Coverage-guided fuzzing (atheris) of the gateway's pure parsers: see fuzz/README.md."""
