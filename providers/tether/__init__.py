"""Tether-style push/pull provider (issue 13): a fake server and the provider's push over HTTP."""
