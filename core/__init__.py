"""What the API and the worker both stand on: settings, database, state machines, queue producer,
persistence, artifacts and experiments. Imports neither service/ nor worker/."""
