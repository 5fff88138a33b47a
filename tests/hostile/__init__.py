"""Hostile input against the ingest service and the program model (issue 5, "Bad input")."""
