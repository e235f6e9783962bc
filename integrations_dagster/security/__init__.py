"""Secrets (credential encryption) and redaction of secret values from errors and logs."""
