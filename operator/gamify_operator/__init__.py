"""The Kopf operator: turns a `GamificationProgram` custom resource into everything it owns."""
