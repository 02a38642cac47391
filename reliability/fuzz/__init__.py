"""Fuzzing of the decoders that read untrusted bytes: a seeded mutation engine (always) and atheris (when installed)."""
