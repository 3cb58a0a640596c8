"""The one matcher: do the tensors read from a file fit a model, and what was loaded.

Every loader (eval, predict, export, the converter, --pretrained, --resume, ``danet.load_model``)
checks through :func:`fit`, so a gap is reported the same way everywhere and never loads silently.
"""
import logging
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


def fit(shapes, found, source, partial=False, hint="check --backbone, --num_classes, --dilated and --multi_grid "
        "against the checkpoint"):
    """Check ``found`` {name: array} against ``shapes`` {name: dims} of a model; returns a :class:`LoadReport`.

    A shape clash or a tensor the model does not have is always an error; a model tensor missing from
    the file is one unless ``partial`` (initial weights, e.g. an ImageNet backbone under a fresh head).
    Every culprit is logged; the one-line error gives the counts and the first few names.
    """
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
