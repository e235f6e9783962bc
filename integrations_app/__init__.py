"""The bundled application: the providers in ``providers/`` wired to their listeners."""
