"""Copy the real data from ../shared/data into .bench-data/ (git-ignored), the benchmarks' data root.

    python bench/prepare_data.py                 # MNIST .gz + the STL-10 binary subset, sha256-checked
    python bench/prepare_data.py --wheels        # also .whl/: pydantic for the GPU machine's Python 3.12

Layout (torchvision's): .bench-data/MNIST/raw/*-ubyte.gz and .bench-data/stl10_binary/{train,test}_{X,y}.bin.
The copy is 45 MB, under the device machine's 64 MiB carry limit (`carry: [".bench-data", ".whl"]`).
The benchmarks then add derived files beside it (the decompressed MNIST that torchvision's MNIST
class reads, the engine's decoded-split cache, ~80 MB); running this script again removes them, so
run it before carrying the folder to the GPU machine. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = {  # source path under the shared data folder -> path under the data root
    **{
        f"mnist/{p}-{k}-ubyte.gz": f"MNIST/raw/{p}-{k}-ubyte.gz"
        for p in ("train", "t10k")
        for k in ("images-idx3", "labels-idx1")
    },
    **{
        f"stl10/stl10_binary_subset/{n}": f"stl10_binary/{n}"
        for n in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
    },
}
DERIVED = (".transferlab-cache", "MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte")
DERIVED += ("MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte")
# The device machine (Python 3.12, torch 2.11) lacks pydantic, which engine.spec needs.
WHEELS = ("pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0")
WHEELS += ("typing-inspection==0.4.5", "typing_extensions==4.16.0")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(source: Path, dest: Path) -> int:
    sums = {}
    listing = source / "SHA256SUMS"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest
    total = 0
    for src_name, dst_name in FILES.items():
        src, dst = source / src_name, dest / dst_name
        if not src.is_file():
            raise SystemExit(f"missing {src}: point --source at the shared data folder")
        if src_name in sums and sha256(src) != sums[src_name]:
            raise SystemExit(f"{src}: sha256 differs from {listing}; the shared copy is damaged")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size or sha256(dst) != sha256(src):
            shutil.copyfile(src, dst)
        total += dst.stat().st_size
    for name in DERIVED:
        path = dest / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return total


def download_wheels(folder: Path) -> None:
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version"]
    cmd += ["3.12", "--implementation", "cp", "-d", str(folder)]
    for platform in platforms:
        cmd += ["--platform", platform]
    subprocess.run(cmd + list(WHEELS), check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--dest", type=Path, default=REPO / ".bench-data")
    p.add_argument("--wheels", action="store_true", help="also download pydantic wheels into .whl/")
    a = p.parse_args()
    total = prepare(a.source.resolve(), a.dest.resolve())
    print(f"{a.dest}: {len(FILES)} files, {total / 1e6:.1f} MB (derived files removed)")
    if a.wheels:
        download_wheels(REPO / ".whl")


if __name__ == "__main__":
    main()
