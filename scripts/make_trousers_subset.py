"""Regenerate the Fashion-MNIST trouser subset that the offline ``default`` scenario ships.

The package bundles a fixed, seeded subset of real Fashion-MNIST "Trouser" images (class 1):
``TRAIN`` images drawn from the official training split and ``HELDOUT`` from the official test
split, with their positions in the official idx files. Fashion-MNIST is © Zalando SE, MIT
licensed; the license text is shipped beside the subset.

Sources (either):
  python scripts/make_trousers_subset.py --npz ../shared/data/fashion_mnist_trousers.npz
  python scripts/make_trousers_subset.py --torchvision-root ~/data [--download]

Writes ``unlearn_gym/data/fashion_mnist/trousers_subset.npz`` (``images`` uint8 (N, 28, 28),
``split`` "train"/"test", ``official_index`` int32, ``source``, ``seed``); the same seed and
source give a byte-identical array content.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TRAIN, HELDOUT, SEED = 600, 200, 0
OUT = Path(__file__).resolve().parents[1] / "unlearn_gym" / "data" / "fashion_mnist" / "trousers_subset.npz"


def from_npz(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    with np.load(path, allow_pickle=False) as z:
        images, split, index = z["images"], z["split"].astype(str), z["official_index"].astype(np.int32)
    tr, te = split == "train", split == "test"
    return images[tr], index[tr], images[te], index[te], f"npz {Path(path).name}"


def from_torchvision(root: str, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    from torchvision.datasets import FashionMNIST

    out = []
    for train in (True, False):
        ds = FashionMNIST(root, train=train, download=download)
        index = np.flatnonzero(ds.targets.numpy() == 1).astype(np.int32)  # class 1 = Trouser
        out += [ds.data.numpy()[index], index]
    return (*out, "torchvision FashionMNIST")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz", help="an .npz with every trouser: images, split, official_index")
    src.add_argument("--torchvision-root", help="torchvision's root holding FashionMNIST/")
    p.add_argument("--download", action="store_true", help="let torchvision download into --torchvision-root")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    train_x, train_i, test_x, test_i, source = (
        from_npz(args.npz) if args.npz else from_torchvision(args.torchvision_root, args.download)
    )
    # official order first, so the draw does not depend on how the source stored the images
    train_x, train_i = train_x[np.argsort(train_i)], np.sort(train_i)
    test_x, test_i = test_x[np.argsort(test_i)], np.sort(test_i)
    rng = np.random.default_rng(SEED)
    pick_train = np.sort(rng.choice(len(train_x), TRAIN, replace=False))
    pick_test = np.sort(rng.choice(len(test_x), HELDOUT, replace=False))
    images = np.concatenate([train_x[pick_train], test_x[pick_test]]).astype(np.uint8)
    split = np.array(["train"] * TRAIN + ["test"] * HELDOUT)
    index = np.concatenate([train_i[pick_train], test_i[pick_test]]).astype(np.int32)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        images=images,
        split=split,
        official_index=index,
        source=np.array(
            "Fashion-MNIST (Zalando SE, MIT license), class 1 'Trouser'; official_index = position in "
            f"the official train/test idx files; drawn with numpy default_rng({SEED}) from {source}"
        ),
        seed=np.array(SEED),
    )
    print(f"wrote {args.out}: {TRAIN} train + {HELDOUT} held-out trousers ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
