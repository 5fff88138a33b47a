"""The scoring worker: stream events -> rules engine -> the program's schema (see worker.py, store.py)."""
