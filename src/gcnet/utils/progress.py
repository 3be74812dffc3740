"""Progress bars that draw only on a terminal, so redirected logs carry no carriage returns."""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable, enabled: bool = True, **kw) -> tqdm:
    """``tqdm(iterable)``, disabled unless ``enabled`` and stderr is a terminal."""
    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not (enabled and sys.stderr.isatty()), **kw)
