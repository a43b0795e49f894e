"""The prototype image bank (PBIP stage 0): build, store with versions, edit, inspect, evaluate.

Quick use::

    from napari_pbip.bank import BankSettings, build_bank, open_bank, add_images, undo
    from napari_pbip.events import run

    bank = run(build_bank(BankSettings(k=3, per_cluster=100), "weak-set", "my-bank"))
    prototypes, valid = bank.prototype_tensor()  # (N, Kmax, d), (N, Kmax)
    bank = add_images(bank, "tumor", ["extra/tumor_01.png"])
    bank = undo(bank)

Importing this package is cheap: torch, safetensors and PIL load inside the functions that use them.
"""

from .build import build_bank
from .edit import add_images, add_images_job, lock, move, recluster, remove, repair, undo
from .eligibility import tissue_fraction
from .evaluate import evaluate_bank, format_eval
from .info import bank_info, format_info
from .kmeans import spherical_kmeans
from .settings import BankSettings, EvalSettings
from .store import Bank, Member, open_bank

__all__ = [
    "Bank",
    "BankSettings",
    "EvalSettings",
    "Member",
    "add_images",
    "add_images_job",
    "bank_info",
    "build_bank",
    "evaluate_bank",
    "format_eval",
    "format_info",
    "lock",
    "move",
    "open_bank",
    "recluster",
    "remove",
    "repair",
    "spherical_kmeans",
    "tissue_fraction",
    "undo",
]
