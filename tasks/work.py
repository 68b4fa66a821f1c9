"""Kept only for archiveflow/cli/binaries.py, which calls `work.recover_stale`.

The pipeline's work lives in the model modules: tasks/crawls.py, tasks/snapshots.py,
tasks/results.py (and tasks/feed.py, the crawl loop's feed). Remove this module once that
caller uses `crawls.expire_stale`.
"""

from __future__ import annotations

from archiveflow.tasks.crawls import expire_stale as recover_stale

__all__ = ["recover_stale"]
