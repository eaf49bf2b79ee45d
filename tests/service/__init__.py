"""API tests through FastAPI TestClient (httpx)."""
