"""transferlab's HTTP API: FastAPI routes, schemas, the database and the inference cache."""
