"""The studies `transferlab experiment --preset` submits; the API's OpenAPI example is the seed one."""

from __future__ import annotations

from typing import Any

# Data here: STL-10 1,000 train / 200 test (the shared subset), all of MNIST. Timings are for 2 CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    # The seed at full scale: resnet18 at 96x96, the seed's sweep (lr x batch size x optimiser), with
    # controls: 73 jobs. Hours on one GPU; meant for a GPU worker per card.
    "seed": {
        "name": "seed study (resnet18, 96x96)",
        "pretrain": {
            "dataset": "stl10",
            "model": "resnet18",
            "hyperparameters": {"epochs": 30, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
            "data": {"image_size": 96},
        },
        "dataset": "mnist",
        "strategies": ["linear", "partial", "full"],
        "frozen_blocks": [2],
        "hyperparameters": {"epochs": 5, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "data": {"image_size": 96},
        "sweep": {"lr": [0.01, 0.001], "batch_size": [64, 128], "optimizer": ["adam", "rmsprop", "sgd"]},
        "controls": True,
    },
    # simple_cnn at 32x32 on all the data there is: STL-10's 1,000 training images for pre-training,
    # MNIST capped at 10,000 training images (all 10,000 test images), two learning rates: 13 jobs.
    "quick": {
        "name": "quick study (simple_cnn, 32x32)",
        "pretrain": {
            "dataset": "stl10",
            "model": "simple_cnn",
            "hyperparameters": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 0.002},
            "data": {"image_size": 32},
        },
        "dataset": "mnist",
        "strategies": ["linear", "partial", "full"],
        "frozen_blocks": [2],
        "hyperparameters": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "data": {"image_size": 32, "train_samples": 10000},
        "sweep": {"lr": [0.003, 0.001]},
        "controls": True,
    },
    # Every code path once, in seconds on any data: each job reads at most 500 training and 200 test
    # images (uncapped, it trained on all 54,000 MNIST images: 508 s on 2 cores for its 13 jobs).
    "smoke": {
        "name": "smoke study",
        "pretrain": {
            "dataset": "stl10",
            "model": "simple_cnn",
            "hyperparameters": {"epochs": 1, "batch_size": 32},
            "data": {"image_size": 16, "train_samples": 500, "test_samples": 200},
        },
        "dataset": "mnist",
        "strategies": ["linear", "partial", "full"],
        "frozen_blocks": [2],
        "hyperparameters": {"epochs": 1, "batch_size": 32},
        "data": {"image_size": 16, "train_samples": 500, "test_samples": 200},
        "sweep": {"lr": [0.01, 0.001]},
        "controls": True,
    },
}
