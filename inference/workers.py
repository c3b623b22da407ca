"""How many cores the analysis keeps busy.

A module of its own, without imports, so that ``noduletrack analyze`` can ask (is a core left for
loading the growth model beside the analysis?) before it imports the analysis stack.
"""

from __future__ import annotations

import os

# threads verifying detection candidates and refining matches (pure NumPy/ndimage/SimpleITK work
# that releases the GIL); a few crops in flight at a time, so memory stays small. The analysis keeps
# this many cores busy; callers can tell from it whether a core is left for other work.
ANALYSIS_WORKERS = max(1, min(4, os.cpu_count() or 1))
