"""Office-Caltech10: 10 shared classes in 4 domains, `root/{amazon,caltech,dslr,webcam}/<class>/*.jpg`.

There is no official train/test split: each domain is split by data.test-fraction and the run seed.
"""

from __future__ import annotations

from pathlib import Path

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.imagefolder import load_image_folder, split_domains
from warmfed_flwr.data.types import DomainSet

DOMAINS = ("amazon", "caltech", "dslr", "webcam")
HELP = (
    "get Office-Caltech10 (e.g. the office_caltech_10 archive linked from the FedBN repository) and unpack "
    "it so that <root>/amazon/back_pack/*.jpg ... <root>/webcam/projector/*.jpg exist, then set data.root=<root>"
)


def office_caltech10_domain_set(settings: DataSettings) -> DomainSet:
    """The four Office-Caltech10 domains, in the order amazon, caltech, dslr, webcam."""
    if not settings.root:
        raise DataError(f"data.name=office-caltech10 needs data.root; {HELP}")
    try:
        data = load_image_folder(settings.root, settings.classes, DOMAINS)
    except DataError as error:
        raise DataError(f"office-caltech10: {error}. {HELP}") from error
    domains = split_domains(data.domains, settings.test_fraction, settings.seed, Path(settings.root))
    return DomainSet(domains=domains, class_names=data.class_names)
