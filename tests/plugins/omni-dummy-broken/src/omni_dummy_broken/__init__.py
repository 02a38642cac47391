"""A deliberately broken plugin (test fixture)."""
