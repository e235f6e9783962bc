"""Fake servers shared by tests and the demo (framework-level ones; the fake GitHub API lives with
its provider in ``providers.github.fake_api``)."""
