"""The one matcher: do the tensors read from a file fit a model, and what was loaded.

Every loader (eval, predict, export, the converter, --pretrained, --resume, ``danet.load_model``)
checks through :func:`fit`, so a gap is reported the same way everywhere and never loads silently.
"""
import logging
import re
from dataclasses import dataclass, field

import numpy as np

from danet.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`fit` found: the model tensors the file fills, and those it does not."""

    source: str
    total: int
    loaded: list
    missing: list = field(default_factory=list)

    def log(self, fmt=None):
        how = f" ({fmt})" if fmt else ""
        log.info("loaded %d of %d tensors from %s%s", len(self.loaded), self.total, self.source, how)
        if self.missing:
            log.warning("%s has %d of %d model tensors; %d keep their initial values (e.g. %s)", self.source,
                        len(self.loaded), self.total, len(self.missing), ", ".join(self.missing[:3]))
        return self


# The classifiers: the 1x1 convolutions that map features to classes (head.cls_fused, head.cls, aux_head.cls, ...).
CLASSIFIER = re.compile(r"(^|\.)cls(_[a-z]+)?\.(weight|bias)$")


def fit(shapes, found, source, partial=False, hint="check --backbone, --num_classes, --dilated and --multi_grid "
        "against the checkpoint"):
    """Check ``found`` {name: array} against ``shapes`` {name: dims} of a model; returns a :class:`LoadReport`.

    A shape clash or a tensor the model does not have is always an error; a model tensor missing from
    the file is one unless ``partial`` (initial weights, e.g. an ImageNet backbone under a fresh head).
    With ``partial``, classifiers that differ only in their number of classes start fresh too: that is
    fine-tuning a trained model on a data set with other classes. Every culprit is logged; the one-line
    error gives the counts and the first few names.
    """
    if partial:
        fresh = [k for k in shapes if k in found and CLASSIFIER.search(k) and _other_classes(found[k], shapes[k])]
        if fresh:
            log.warning("%s: %d classifier tensors are for %d classes, the model has %d: they start fresh "
                        "(fine-tuning to new classes)", source, len(fresh), np.shape(found[fresh[0]])[0],
                        shapes[fresh[0]][0])
            found = {k: v for k, v in found.items() if k not in fresh}
    missing = [k for k in shapes if k not in found]
    unexpected = [k for k in found if k not in shapes]
    clashes = [f"{k} {list(np.shape(found[k]))} (model {list(shapes[k])})" for k in shapes
               if k in found and list(np.shape(found[k])) != list(shapes[k])]
    problems = [(title, names) for title, names in (("missing", [] if partial else missing),
                                                    ("unexpected", unexpected),
                                                    ("with another shape", clashes)) if names]
    if problems:
        for title, names in problems:
            log.error("%s: %d tensors %s: %s", source, len(names), title, ", ".join(names))
        summary = "; ".join(f"{len(names)} {title} (e.g. {', '.join(names[:3])})" for title, names in problems)
        raise UserError(f"{source} does not fit the model ({summary}; all listed in the log): {hint}")
    if partial and not any(k in found for k in shapes):
        raise UserError(f"{source} has none of the model's tensors: it is not a checkpoint of this model")
    return LoadReport(source, len(shapes), [k for k in shapes if k in found], missing)


def _other_classes(array, dims):
    """True if only the first (class) dimension differs."""
    got, want = list(np.shape(array)), list(dims)
    return len(got) == len(want) and got[0] != want[0] and got[1:] == want[1:]
