"""Data for proxy training, held whole in memory so that a trial never waits on a loader.

`load_dataset` reads one of five sources (scikit-learn's bundled digits, the cluttered digits generated
from them, CIFAR python batches, an image folder, a .npz file), makes or takes a train/val split,
subsets the training split and standardizes both splits with the training split's per-channel
statistics. Each format has its own pure reader returning images scaled to [0, 1]; one dispatcher
picks the reader and applies the shared rules. `resize_images`, `augment_batch` and `iterate_batches`
then work on tensors already on the training device, so the fast path has no DataLoader, no worker
processes and no host syncs.

Everything a user can get wrong (paths, file contents, arguments) raises `NasError` with a one-line
message naming the problem and the fix; see docs/data.md.

Modules: `dataset` (Dataset, load_dataset), `digest` (source_fingerprint: what a study records of its data),
one reader per format (`digits`, `cluttered`, `cifar`, `npz`, `image_folder`) sharing `raw`, `split` (split
and subset indices) and `batches`.
"""

from nas.data.batches import augment_batch, iterate_batches, resize_images
from nas.data.dataset import Dataset, load_dataset
from nas.data.digest import first_16_mib_fingerprint, source_fingerprint

__all__ = ["Dataset", "augment_batch", "first_16_mib_fingerprint", "iterate_batches", "load_dataset", "resize_images",
           "source_fingerprint"]
