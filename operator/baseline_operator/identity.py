"""Who the operator is to the API server: the one field manager of everything it applies.

At the bottom of the layers (pyproject.toml): the API layer sends it with every apply, the builders and the
planner compare ownership against it.
"""

from __future__ import annotations

from typing import Final

FIELD_MANAGER: Final = "baseline-operator"
