"""The textbook baseline: the seed study written the way a PyTorch tutorial writes it.

    python -m bench.textbook pretrain --epochs 1 --train-samples 500
    python -m bench.textbook finetune --source CKPT_DIR --strategy linear --epochs 3 --train-samples 2000

(CKPT_DIR: any engine checkpoint folder, e.g. one made by `python -m bench.pretrain_throughput`.)
Prints one measurement as JSON. bench/finetune_throughput.py and bench/pretrain_throughput.py run it
side by side with the engine.

What makes it "textbook" (what the tutorials do, and what the engine does instead):
- torchvision data sets with per-sample PIL transforms (`transforms.Compose`) in a `DataLoader` with
  worker processes (engine: whole uint8 splits as tensors, whole-batch preprocessing on the device);
- frozen layers get `requires_grad=False` and nothing else: `model.train()` leaves their BatchNorm in
  training mode, so they normalise with batch statistics and their running statistics drift towards
  the target data (engine and timm keep frozen blocks in eval mode);
- the frozen extractor runs every epoch, linear probing included (engine: features computed once);
- float32, NCHW, a `.item()` per batch for the running loss (engine on CUDA: bf16 autocast,
  channels_last, totals kept on the device).
What is the same: the model (engine.models, loaded from the same engine checkpoint), the rows (engine's
seeded stratified subsets and validation hold-out), Adam with the engine's parameter groups and a
cosine schedule stepped every batch, lr, batch size, epochs, seed (the new head's initial weights are
identical), a validation pass every epoch, the augmentations (reflect-padded crop of 1/8 the side,
horizontal flip p 0.5, 9-tap Gaussian blur p 0.5 with sigma in 0.1..2.0).

MNIST comes from torchvision.datasets.MNIST (decompressed files under <root>/MNIST/raw; see
bench.common.unpack_mnist). torchvision's STL10 class md5-checks the full 2.5 GB archive and refuses
our 1,000-image subset, so STL-10 is served by `ArrayImages`: the arrays engine.datasets.load_split
reads, turned into one PIL image per __getitem__, which is what STL10.__getitem__ itself does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from bench.common import Measurement, select_rows
from engine.checkpoint import load_checkpoint
from engine.cost import PeakMemory, Stopwatch
from engine.datasets import DATASETS, load_split
from engine.device import resolve_device
from engine.models import build_model, replace_classifier

MNIST, STL10 = DATASETS["mnist"], DATASETS["stl10"]


def mnist_transform(image_size: int) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=3),
            transforms.Resize(image_size),
            transforms.ToTensor(),
            transforms.Normalize(MNIST.mean * 3, MNIST.std * 3),
        ]
    )


def stl10_transform(image_size: int, train: bool) -> transforms.Compose:
    steps: list = [] if image_size == STL10.native_size else [transforms.Resize(image_size)]
    if train:
        steps += [
            transforms.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.RandomApply([transforms.GaussianBlur(9, sigma=(0.1, 2.0))], p=0.5),
        ]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(STL10.mean, STL10.std)])


class ArrayImages(Dataset):
    """uint8 (N, C, H, W) images served one PIL image at a time, like torchvision's STL10."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        return self.transform(image), int(self.labels[i])


def loader(
    dataset, batch_size: int, workers: int, device: torch.device, shuffle: bool = False, seed: int = 0
):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        # the engine drops a last batch of one row too: BatchNorm cannot train on a single sample
        drop_last=shuffle and len(dataset) % batch_size == 1,
    )


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device) -> tuple[float, float, int]:
    model.train()  # frozen blocks included: their BatchNorm uses batch statistics, as in the tutorials
    running_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running_loss += loss.item() * labels.size(0)
        correct += (outputs.argmax(1) == labels).sum().item()
        seen += labels.size(0)
    return running_loss / max(seen, 1), correct / max(seen, 1), seen


@torch.no_grad()
def evaluate(model, loader, criterion, device) -> tuple[float, float]:
    model.eval()
    running_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        outputs = model(images)
        running_loss += criterion(outputs, labels).item() * labels.size(0)
        correct += (outputs.argmax(1) == labels).sum().item()
        seen += labels.size(0)
    return running_loss / max(seen, 1), correct / max(seen, 1)


def fit(model, train_loader, val_loader, test_loader, epochs, lr, extractor_lr_factor, device, verbose):
    """Train, validating every epoch; then test. Returns (train seconds, test accuracy)."""
    extractor = [p for p in model.blocks.parameters() if p.requires_grad]
    groups = [{"params": extractor, "lr": lr * extractor_lr_factor}] if extractor else []
    optimizer = optim.Adam(groups + [{"params": model.head.parameters(), "lr": lr}])
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train_loader)))
    criterion = nn.CrossEntropyLoss()
    watch = Stopwatch(device)
    for epoch in range(1, epochs + 1):
        with watch:
            loss, acc, _ = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, device)
            val_loss, val_acc = evaluate(model, val_loader, criterion, device) if len(val_loader) else (0, 0)
        if verbose:
            print(f"epoch {epoch}: loss {loss:.4f} acc {acc:.4f}  val loss {val_loss:.4f} acc {val_acc:.4f}")
    _, test_acc = evaluate(model, test_loader, criterion, device)
    return watch.seconds, test_acc


def finetune_run(
    *,
    data_root: str,
    source: str,
    strategy: str,
    frozen_blocks: int,
    extractor_lr_factor: float,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    image_size: int,
    train_samples: int | None,
    test_samples: int | None,
    val_fraction: float,
    device: str,
    workers: int,
    verbose: bool = False,
) -> dict:
    """Fine-tune the checkpoint in `source` on MNIST, freezing the first `frozen_blocks` blocks."""
    started = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)  # as engine.run: the new head's initial weights are identical
    state, meta = load_checkpoint(Path(source))
    model = build_model(meta["architecture"], int(meta["num_classes"]))
    model.load_state_dict(state)
    replace_classifier(model, MNIST.num_classes)
    for block in model.blocks[:frozen_blocks]:
        for p in block.parameters():
            p.requires_grad = False
    model.to(dev)

    with PeakMemory(dev) as memory:
        tf = mnist_transform(image_size)
        train_set = datasets.MNIST(data_root, train=True, download=False, transform=tf)
        test_set = datasets.MNIST(data_root, train=False, download=False, transform=tf)
        rows = select_rows(
            train_set.targets, test_set.targets, train_samples, test_samples, val_fraction, seed
        )
        train_loader = loader(
            Subset(train_set, rows.train), batch_size, workers, dev, shuffle=True, seed=seed
        )
        val_loader = loader(Subset(train_set, rows.val), batch_size, workers, dev)
        test_loader = loader(Subset(test_set, rows.test), batch_size, workers, dev)
        train_seconds, test_acc = fit(
            model, train_loader, val_loader, test_loader, epochs, lr, extractor_lr_factor, dev, verbose
        )
        with tempfile.TemporaryDirectory() as tmp:  # the tutorial's closing torch.save
            torch.save(model.state_dict(), Path(tmp) / "model.pt")
        peak = memory.read()
    return _measurement(
        strategy, dev, epochs, len(rows.train), train_seconds, started, peak, memory, test_acc
    )


def pretrain_run(
    *,
    data_root: str,
    model_name: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    image_size: int,
    train_samples: int | None,
    test_samples: int | None,
    val_fraction: float,
    device: str,
    workers: int,
    verbose: bool = False,
) -> dict:
    """Train `model_name` from random initialisation on STL-10 with the seed's augmentations."""
    started = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = build_model(model_name, STL10.num_classes).to(dev)

    with PeakMemory(dev) as memory:
        train, test = (load_split("stl10", s, Path(data_root)) for s in ("train", "test"))
        rows = select_rows(train.labels, test.labels, train_samples, test_samples, val_fraction, seed)

        def images(split, index, train_transform: bool):
            index = torch.tensor(index, dtype=torch.long)
            return ArrayImages(
                split.images[index], split.labels[index], stl10_transform(image_size, train_transform)
            )

        train_loader = loader(
            images(train, rows.train, True), batch_size, workers, dev, shuffle=True, seed=seed
        )
        val_loader = loader(images(train, rows.val, False), batch_size, workers, dev)
        test_loader = loader(images(test, rows.test, False), batch_size, workers, dev)
        train_seconds, test_acc = fit(
            model, train_loader, val_loader, test_loader, epochs, lr, 1.0, dev, verbose
        )
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(model.state_dict(), Path(tmp) / "model.pt")
        peak = memory.read()
    return _measurement(
        "pretrain", dev, epochs, len(rows.train), train_seconds, started, peak, memory, test_acc
    )


def _measurement(task, dev, epochs, train_rows, train_seconds, started, peak, memory, test_acc) -> dict:
    return Measurement(
        side="textbook",
        task=task,
        device=str(dev),
        epochs=epochs,
        train_rows=train_rows,
        images_per_second=epochs * train_rows / max(train_seconds, 1e-9),
        train_seconds=train_seconds,
        wall_seconds=time.perf_counter() - started,
        peak_memory_bytes=peak,
        memory_device=memory.where,
        test_accuracy=test_acc,
    ).to_dict()


def main(argv: list[str] | None = None) -> None:
    from bench.common import resolve_data_root, unpack_mnist
    from engine.spec import Hyperparameters

    hp = Hyperparameters()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", choices=["pretrain", "finetune"])
    p.add_argument("--data-root")
    p.add_argument("--source", help="finetune: engine checkpoint folder")
    p.add_argument("--strategy", choices=["linear", "partial", "full"], default="linear")
    p.add_argument("--frozen-blocks", type=int, help="partial: default half the blocks, as the engine")
    p.add_argument("--model", default="resnet18", help="pretrain: architecture")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=hp.batch_size)
    p.add_argument("--lr", type=float, default=hp.lr)
    p.add_argument("--seed", type=int, default=hp.seed)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--train-samples", type=int)
    p.add_argument("--test-samples", type=int)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    root = resolve_data_root(a.data_root)
    common = dict(
        data_root=str(root),
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        image_size=a.image_size,
        train_samples=a.train_samples,
        test_samples=a.test_samples,
        val_fraction=a.val_fraction,
        device=a.device,
        workers=a.workers,
        verbose=True,
    )
    if a.job == "pretrain":
        out = pretrain_run(model_name=a.model, **common)
    else:
        if not a.source:
            p.error("finetune needs --source")
        from engine.checkpoint import read_meta
        from engine.models import block_count

        blocks = block_count(read_meta(Path(a.source))["architecture"])
        frozen = {"linear": blocks, "partial": a.frozen_blocks or max(1, blocks // 2), "full": 0}[a.strategy]
        unpack_mnist(root)
        factor = hp.extractor_lr_factor if a.strategy == "full" else 1.0
        out = finetune_run(
            source=a.source, strategy=a.strategy, frozen_blocks=frozen, extractor_lr_factor=factor, **common
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
