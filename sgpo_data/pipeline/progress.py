"""Progress reporting without a UI dependency: stages call `task`/`advance`; the CLI passes a rich one."""

from __future__ import annotations


class Progress:
    """Silent default."""

    def task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, n: int = 1) -> None:
        pass

    def info(self, task: int, text: str) -> None:
        """A short live status (e.g. the latest loss) shown beside the task."""
