"""ImageNet weights: which torchvision weight files a fine-tune can start from (source_weights)."""

from __future__ import annotations

from fastapi import APIRouter

from core.sources import weights_dir
from engine.pretrained import list_weights
from service.deps import SettingsDep
from service.schemas import WeightsList, WeightsPublic

router = APIRouter(prefix="/weights", tags=["checkpoints"])


@router.get("", response_model=WeightsList)
def list_imagenet_weights(settings: SettingsDep) -> WeightsList:
    """Each architecture's ImageNet weight file: its name, whether it is in the data root's weights/
    folder, and its size."""
    rows = [WeightsPublic(**vars(row)) for row in list_weights(weights_dir(settings))]
    return WeightsList(data=rows, count=len(rows), download=settings.download)
