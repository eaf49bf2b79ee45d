"""PATCH /checkpoints/{id} names and tags a checkpoint (bounded); POST /predict model=<name> is
answered by the newest checkpoint of that name."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.checkpoint_labels import MAX_TAGS, NAME_MAX_CHARS, TAG_MAX_CHARS
from core.models import Checkpoint


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def predict_by_name(client, name: str):
    return client.post("/predict", files=[("files", ("a.png", png(), "image/png"))], data={"model": name})


def test_patch_sets_name_and_tags(client, trained_checkpoint):
    response = client.patch(
        f"/checkpoints/{trained_checkpoint.id}",
        json={"name": "digits-v1", "tags": ["mnist", " best ", "mnist"]},
    )

    assert response.status_code == 200
    assert response.json()["name"] == "digits-v1"
    assert response.json()["tags"] == ["mnist", "best"]  # stripped, each once
    assert client.get(f"/checkpoints/{trained_checkpoint.id}").json()["tags"] == ["mnist", "best"]


def test_patch_leaves_out_fields_alone_and_null_removes_the_name(client, trained_checkpoint):
    client.patch(f"/checkpoints/{trained_checkpoint.id}", json={"name": "digits", "tags": ["a"]})

    client.patch(f"/checkpoints/{trained_checkpoint.id}", json={"tags": ["b"]})
    kept = client.get(f"/checkpoints/{trained_checkpoint.id}").json()
    client.patch(f"/checkpoints/{trained_checkpoint.id}", json={"name": None})
    removed = client.get(f"/checkpoints/{trained_checkpoint.id}").json()

    assert (kept["name"], kept["tags"]) == ("digits", ["b"])
    assert (removed["name"], removed["tags"]) == (None, ["b"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "x" * (NAME_MAX_CHARS + 1)}, "name"),
        ({"tags": [str(i) for i in range(MAX_TAGS + 1)]}, "tags"),
        ({"tags": ["t" * (TAG_MAX_CHARS + 1)]}, "tags"),
        ({"tags": ["bell\x07"]}, "tags"),
        ({"label": "typo"}, "label"),
    ],
)
def test_patch_out_of_bounds_is_422_naming_the_field_and_changes_nothing(
    client, trained_checkpoint, body, field
):
    response = client.patch(f"/checkpoints/{trained_checkpoint.id}", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]
    after = client.get(f"/checkpoints/{trained_checkpoint.id}").json()
    assert (after["name"], after["tags"]) == (None, [])


def test_patch_of_an_unknown_checkpoint_is_404(client):
    assert client.patch("/checkpoints/nope", json={"name": "x"}).status_code == 404


def test_predict_by_name_uses_the_newest_checkpoint_of_that_name(client, session, trained_checkpoint):
    older = Checkpoint(
        job_id=None,
        **{
            c: getattr(trained_checkpoint, c)
            for c in (
                "architecture",
                "dataset",
                "strategy",
                "class_names",
                "input_spec",
                "path",
                "sha256",
                "size_bytes",
            )
        },
        created_at=trained_checkpoint.created_at.replace(year=2000),
        origin="imported",
    )
    session.add(older)
    session.commit()
    for row in (older, trained_checkpoint):
        client.patch(f"/checkpoints/{row.id}", json={"name": "digits"})

    response = predict_by_name(client, "digits")

    assert response.status_code == 200, response.text
    assert response.json()["checkpoint"] == trained_checkpoint.id


def test_predict_by_a_name_nobody_has_is_404_naming_model(client, trained_checkpoint):
    response = predict_by_name(client, "nobody")

    assert response.status_code == 404
    assert response.json()["detail"].startswith("model:")
