"""GET /checkpoints and GET /checkpoints/{id}."""

from __future__ import annotations

CHECKPOINT_KEYS = {
    "id",
    "job",
    "architecture",
    "dataset",
    "strategy",
    "class_names",
    "input_spec",
    "sha256",
    "size_bytes",
    "disk_bytes",
    "created_at",
    "name",  # names, tags and imports (issue #14)
    "tags",
    "origin",
}


def test_list_pages_newest_first(client, make_job, make_checkpoint_row):
    rows = [make_checkpoint_row(make_job(status="succeeded")) for _ in range(3)]

    first = client.get("/checkpoints", params={"limit": 2}).json()
    rest = client.get("/checkpoints", params={"skip": 2}).json()

    assert first["count"] == rest["count"] == 3
    ids = [c["id"] for c in first["data"] + rest["data"]]
    assert sorted(ids) == sorted(r.id for r in rows) and len(set(ids)) == 3


def test_get_describes_the_checkpoint_without_its_path(client, make_job, make_checkpoint_row):
    job = make_job(status="succeeded", kind="finetune", architecture="resnet18", dataset="mnist")
    row = make_checkpoint_row(job, sha256="a" * 64, size_bytes=1234)

    body = client.get(f"/checkpoints/{row.id}").json()

    assert set(body) == CHECKPOINT_KEYS
    assert body["job"] == job.id and body["architecture"] == "resnet18"
    assert body["dataset"] == "mnist" and body["strategy"] == "linear"
    assert body["class_names"] == [str(i) for i in range(10)]
    assert body["input_spec"]["channels"] == 1
    assert body["sha256"] == "a" * 64 and body["size_bytes"] == 1234


def test_get_unknown_checkpoint_is_404(client):
    response = client.get("/checkpoints/nope")

    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
